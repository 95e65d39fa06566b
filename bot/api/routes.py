"""Agent-facing routes. Sync handlers run in the threadpool, so DB work never blocks the loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bot.api.auth import AgentKey, agent_key, current_resource_server
from bot.api.context import context_of
from core.errors import ValidationFailed
from core.inputs import SubmitBody
from core.model import SessionOutcome, Status
from core.snapshots import RequestSnapshot

router = APIRouter()
Agent = Annotated[AgentKey, Depends(agent_key)]


class CompleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: SessionOutcome
    detail: str = Field(default="", max_length=4000)


class ClaimAnswer(BaseModel):
    token: str
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    expires_at: str
    scope: str
    jti: str
    request_id: str


@router.post("/v1/requests", status_code=201, tags=["requests"], response_model=dict[str, Any])
def submit(
    body: SubmitBody,
    request: Request,
    key: Agent,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Submit an intent. Same Idempotency-Key + same body: the first answer (200)."""
    ctx = context_of(request)
    snapshot, created = ctx.service.submit_by_key(
        str(key), body.to_intent, now=ctx.clock(), idempotency_key=idempotency_key
    )
    # Answered as built: to_public() is JSON-ready, so FastAPI's validation of the return
    # value against the declared model would only repeat work on the hottest route.
    return JSONResponse(
        snapshot.to_public(),
        status_code=201 if created else 200,
        headers={"Location": f"/v1/requests/{snapshot.id}"},
    )


@router.get("/v1/requests/{request_id}", tags=["requests"])
async def get_request(
    request_id: str,
    request: Request,
    key: Agent,
    wait: Annotated[
        int, Query(ge=0, le=60, description="Hold up to N seconds for a status change")
    ] = 0,
    since: Annotated[
        Status | None,
        Query(description="The status the caller last saw: answer at once if it differs"),
    ] = None,
) -> dict[str, Any]:
    """The request. With ``wait``, held until its status changes (from ``since`` when given),
    or N seconds pass; a request in a final status is answered at once."""
    ctx = context_of(request)

    def read() -> RequestSnapshot:
        return ctx.service.get(request_id, agent_id=key.identity(request).id)

    if wait == 0:
        return (await run_in_threadpool(read)).to_public()
    event = ctx.hub.register(request_id)
    try:
        current = await run_in_threadpool(read)
        baseline = since or current.status
        deadline = time.monotonic() + wait
        while current.status is baseline and not current.status.is_final:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    event.wait(), min(remaining, ctx.cross_replica_recheck_seconds)
                )
            event.clear()
            current = await run_in_threadpool(read)
        return current.to_public()
    finally:
        ctx.hub.unregister(request_id, event)


@router.post("/v1/requests/{request_id}/credential", tags=["requests"], response_model=ClaimAnswer)
def claim(request_id: str, request: Request, key: Agent) -> ClaimAnswer:
    """Mint the credential of an approved request. Returned once; any other status is 409."""
    ctx = context_of(request)
    agent = key.identity(request)
    _, issued = ctx.service.claim(request_id, agent, now=ctx.clock())
    return ClaimAnswer(
        token=issued.token,
        token_type=issued.token_type,
        expires_at=issued.expires_at.isoformat().replace("+00:00", "Z"),
        scope=issued.scope,
        jti=issued.handle,
        request_id=request_id,
    )


@router.post("/v1/requests/{request_id}/complete", tags=["requests"])
def complete(request_id: str, body: CompleteBody, request: Request, key: Agent) -> dict[str, Any]:
    ctx = context_of(request)
    agent = key.identity(request)
    return ctx.service.complete(
        request_id, agent, body.outcome, body.detail, now=ctx.clock()
    ).to_public()


@router.post("/v1/requests/{request_id}/cancel", tags=["requests"])
def cancel(request_id: str, request: Request, key: Agent) -> dict[str, Any]:
    ctx = context_of(request)
    agent = key.identity(request)
    return ctx.service.cancel(request_id, agent, now=ctx.clock()).to_public()


@router.get("/.well-known/jwks.json", tags=["keys"])
def jwks(request: Request) -> dict[str, Any]:
    return context_of(request).service.keyring.jwks()


@router.post("/v1/introspect", tags=["introspection"])
async def introspect(
    request: Request, _caller: Annotated[str, Depends(current_resource_server)]
) -> dict[str, Any]:
    """RFC 7662. Body: form ``token=...`` or JSON ``{"token": "..."}``."""
    ctx = context_of(request)
    raw = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    token: Any = None
    if content_type == "application/json":
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            raise ValidationFailed("body is not valid JSON") from None
        token = data.get("token") if isinstance(data, dict) else None
    else:
        values = parse_qs(raw.decode("utf-8", "replace")).get("token")
        token = values[0] if values else None
    if not isinstance(token, str) or not token:
        raise ValidationFailed("token: a token is required")
    return await run_in_threadpool(ctx.service.introspect, token, now=ctx.clock())


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}
