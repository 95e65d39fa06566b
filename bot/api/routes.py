"""Agent-facing routes. Sync handlers run in the threadpool, so DB work never blocks the loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bot.api.auth import AgentKey, ResourceServerName, agent_key, current_resource_server
from bot.api.context import context_of
from bot.api.delegation_routes import router as delegation_router
from bot.api.rendering import claim_json, request_json
from bot.api.schemas import (
    INTROSPECTION_BODY,
    ClaimAnswer,
    Health,
    Introspection,
    Jwks,
    RequestView,
    SubmitAnswer,
    problem_responses,
)
from bot.api.strict_json import StrictJsonRoute, strict_loads
from core.dpop import InvalidDpopProof, ProofOfPossession
from core.errors import ValidationFailed
from core.inputs import FreeText, Identifier, SubmitBody
from core.model import SessionOutcome, Status
from core.snapshots import RequestSnapshot

router = APIRouter(route_class=StrictJsonRoute)  # every JSON body: bot/api/strict_json.py
Agent = Annotated[AgentKey, Depends(agent_key)]
RequestId = Annotated[Identifier, Path(max_length=64)]
# A token answer is never cached, by the client or anything between (RFC 6749 §5.1).
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_LOCATION = {"Location": {"description": "The request's URL", "schema": {"type": "string"}}}


# Read by hand (``_proof_of_possession``: exactly one is allowed), so documented here.
_DPOP_HEADER = {
    "name": "DPoP",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "An RFC 9449 proof (htm POST, htu this URL): binds the credential to its "
    "key (token_type DPoP, cnf.jkt); required by a rule with require_dpop (docs/dpop.md)",
}


class CompleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: SessionOutcome
    detail: FreeText = Field(default="", max_length=4000)


def _answer(snapshot: RequestSnapshot, status_code: int = 200, **headers: str) -> JSONResponse:
    """The request as built: ``request_json`` is JSON-ready, so FastAPI's validation of the
    return value against ``RequestView`` would only repeat work (a test keeps them in step)."""
    return JSONResponse(request_json(snapshot), status_code=status_code, headers=headers or None)


@router.post(
    "/v1/requests",
    status_code=201,
    tags=["requests"],
    response_model=SubmitAnswer,
    responses={
        201: {"description": "A new request", "headers": _LOCATION},
        200: {
            "model": RequestView,
            "description": "The request of this Idempotency-Key's first answer (a credential "
            "claimed with it is not returned again)",
            "headers": _LOCATION,
        },
        **problem_responses(401, 404, 409, 413, 422, 429),
    },
)
def submit(
    body: SubmitBody,
    request: Request,
    key: Agent,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Submit an intent. Same Idempotency-Key + same body: the first answer (200). With
    ``"claim": true`` a pre-authorised request is claimed in the same call: its ``credential``
    carries the token (and an issuer's ``secret``), once; a ``DPoP`` proof for this URL binds
    it (docs/dpop.md)."""
    ctx = context_of(request)
    answers: list[JSONResponse] = []

    def answer_new(created: RequestSnapshot) -> None:
        # Built (serialised) inside the transaction: if the answer cannot be made, nothing
        # is committed, so the agent never misses a request that exists.
        answers.append(_answer(created, 201, Location=f"/v1/requests/{created.id}"))

    if body.claim:
        snapshot, created, claimed = ctx.service.submit_and_claim(
            str(key),
            body.to_intent,
            now=ctx.clock(),
            idempotency_key=idempotency_key,
            before_commit=answer_new,
            dpop=_proof_of_possession(request),
        )
        if claimed is not None:
            document = request_json(claimed.request)
            document["credential"] |= claim_json(claimed)
            location = f"/v1/requests/{snapshot.id}"
            return JSONResponse(
                document, status_code=201, headers={"Location": location, **_NO_STORE}
            )
    else:
        snapshot, created = ctx.service.submit_by_key(
            str(key),
            body.to_intent,
            now=ctx.clock(),
            idempotency_key=idempotency_key,
            before_commit=answer_new,
        )
    if created:
        return answers[0]
    return _answer(snapshot, 200, Location=f"/v1/requests/{snapshot.id}")


@router.get(
    "/v1/requests/{request_id}",
    tags=["requests"],
    response_model=RequestView,
    responses=problem_responses(401, 404, 422),
)
async def get_request(
    request_id: RequestId,
    request: Request,
    key: Agent,
    wait: Annotated[
        int, Query(ge=0, le=60, description="Hold up to N seconds for a status change")
    ] = 0,
    since: Annotated[
        Status | None,
        Query(description="The status the caller last saw: answer at once if it differs"),
    ] = None,
) -> JSONResponse:
    """The request. With ``wait``, held until its status changes (from ``since`` when given),
    or N seconds pass; a request in a final status is answered at once."""
    ctx = context_of(request)
    caller = None

    def read() -> RequestSnapshot:
        nonlocal caller
        if caller is None:  # a workload token is verified once, however long the wait
            caller = ctx.service.present(str(key), now=ctx.clock())
        return ctx.service.get_as(request_id, caller, now=ctx.clock())

    if wait == 0:
        return _answer(await run_in_threadpool(read))
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
        return _answer(current)
    finally:
        ctx.hub.unregister(request_id, event)


@router.post(
    "/v1/requests/{request_id}/credential",
    tags=["requests"],
    response_model=ClaimAnswer,
    response_model_exclude_none=True,
    responses=problem_responses(400, 401, 404, 409, 502),
    openapi_extra={"parameters": [_DPOP_HEADER]},
)
def claim(request_id: RequestId, request: Request, key: Agent) -> JSONResponse:
    """Mint the credential of an approved request. Returned once; any other status is 409.
    A rule with an issuer adds ``secret``; an issuer that fails answers 502 and the request
    stays approved (claim again). A ``DPoP`` proof (RFC 9449; ``htu`` = the public URL and
    this path) binds the credential to its key (``token_type`` ``DPoP``); a bad one, or none
    where the rule requires it, is 400 and claims nothing."""
    ctx = context_of(request)
    now = ctx.clock()
    caller = ctx.service.present(str(key), now=now)
    claimed = ctx.service.claim(request_id, caller, now=now, dpop=_proof_of_possession(request))
    return JSONResponse(claim_json(claimed), headers=_NO_STORE)


def _proof_of_possession(request: Request) -> ProofOfPossession | None:
    """The ``DPoP`` header, if any, with the URLs it may name: the one the request arrived at,
    and the public URL joined with the request's path (behind a proxy, the agent's URL)."""
    proofs = request.headers.getlist("dpop")
    if not proofs:
        return None
    if len(proofs) > 1:
        raise InvalidDpopProof("send one DPoP header")
    public = context_of(request).service.issuer_url.rstrip("/")
    arrived = str(request.url.replace(query=None, fragment=None))
    return ProofOfPossession(proofs[0], request.method, (public + request.url.path, arrived))


@router.post(
    "/v1/requests/{request_id}/complete",
    tags=["requests"],
    response_model=RequestView,
    responses=problem_responses(401, 404, 409, 413, 422),
)
def complete(
    request_id: RequestId, body: CompleteBody, request: Request, key: Agent
) -> JSONResponse:
    """Record the outcome and revoke the credential (``completed``)."""
    ctx = context_of(request)
    now = ctx.clock()
    caller = ctx.service.present(str(key), now=now)
    return _answer(ctx.service.complete(request_id, caller, body.outcome, body.detail, now=now))


@router.post(
    "/v1/requests/{request_id}/cancel",
    tags=["requests"],
    response_model=RequestView,
    responses=problem_responses(401, 404, 409),
)
def cancel(request_id: RequestId, request: Request, key: Agent) -> JSONResponse:
    """``pending`` or ``approved`` → ``cancelled``."""
    ctx = context_of(request)
    now = ctx.clock()
    return _answer(ctx.service.cancel(request_id, ctx.service.present(str(key), now=now), now=now))


@router.get("/.well-known/jwks.json", tags=["keys"], response_model=Jwks)
def jwks(request: Request) -> dict[str, Any]:
    """The public keys that verify credentials and signed decisions."""
    return context_of(request).service.keyring.jwks()


@router.post(
    "/v1/introspect",
    tags=["introspection"],
    response_model=Introspection,
    response_model_exclude_unset=True,
    responses=problem_responses(401, 413, 422),
    openapi_extra={"requestBody": INTROSPECTION_BODY},
)
async def introspect(
    request: Request, caller: Annotated[ResourceServerName, Depends(current_resource_server)]
) -> dict[str, Any]:
    """RFC 7662. Body: form ``token=...`` or JSON ``{"token": "..."}``."""
    ctx = context_of(request)
    raw = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    token: Any = None
    if content_type == "application/json":
        try:
            data = strict_loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise ValidationFailed(f"body is not valid JSON: {exc.msg}") from None
        token = data.get("token") if isinstance(data, dict) else None
    else:
        values = parse_qs(raw.decode("utf-8", "replace")).get("token")
        token = values[0] if values else None
    if not isinstance(token, str) or not token:
        raise ValidationFailed("token: a token is required")
    return await run_in_threadpool(
        ctx.service.introspect, token, now=ctx.clock(), audiences=caller.audiences
    )


@router.get("/healthz", tags=["health"], response_model=Health)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# docs/delegation.md: delegations and /v1/token, StrictJsonRoutes of this router's own
router.routes.extend(delegation_router.routes)
