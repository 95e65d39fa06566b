"""Delegation routes (docs/delegation.md): ``POST /v1/requests/{id}/delegations`` and the RFC
8693 token exchange at ``POST /v1/token``, which answers in OAuth's shape (RFC 6749 §5.1 and
§5.2), not problem details."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from bot.api.auth import AgentKey, agent_key
from bot.api.context import context_of
from bot.api.schemas import problem_responses
from bot.api.strict_json import StrictJsonRoute
from core.delegation import MAX_GLOBS, Delegation
from core.durations import format_duration, parse_duration
from core.errors import (
    Conflict,
    IllegalTransition,
    NotFound,
    StepupError,
    Unauthenticated,
    ValidationFailed,
)
from core.inputs import Identifier
from core.usecases.exchanging import Exchanged, ExchangeRefused

router = APIRouter(route_class=StrictJsonRoute)
Agent = Annotated[AgentKey, Depends(agent_key)]
RequestId = Annotated[Identifier, Path(max_length=64)]

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 (a type URI)
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 (a type URI)
_SUBJECT_TYPES = (JWT, ACCESS_TOKEN)
_ACTOR_TYPES = (JWT, ACCESS_TOKEN, ID_TOKEN)  # a workload JWT, or a static key in development
_PARAMETERS = frozenset(
    {
        "grant_type",
        "subject_token",
        "subject_token_type",
        "actor_token",
        "actor_token_type",
        "scope",
        "audience",
        "requested_token_type",
        "resource",
    }
)
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class DelegationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: Identifier = Field(max_length=128, description="The child agent's id")
    actions: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        min_length=1,
        max_length=MAX_GLOBS,
        description="Globs the child's actions must match: the parent's action or names "
        "under it (deploy, deploy.*)",
    )
    targets: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        min_length=1,
        max_length=MAX_GLOBS,
        description="Globs the child's targets must match: the parent's target or names "
        "under it (payments, payments/*)",
    )
    max_ttl: str = Field(max_length=16, examples=["5m"], description="30s, 5m, 2h, 1d")

    @field_validator("max_ttl")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)  # ValueError: 422 naming max_ttl
        return value


class DelegationView(BaseModel):
    id: str = Field(examples=["dlg_0123456789abcdef0123456789abcdef"])
    parent_request_id: str
    agent: str
    actions: list[str]
    targets: list[str]
    max_ttl: str
    max_ttl_seconds: int
    depth: int = Field(ge=1, description="1 for a delegation of a root request")
    created_at: datetime


class TokenAnswer(BaseModel):
    """RFC 8693 §2.2.1."""

    access_token: str
    issued_token_type: str = Field(examples=[ACCESS_TOKEN])
    token_type: str = Field(examples=["Bearer"])
    expires_in: int
    scope: str
    request_id: str = Field(description="The child request the token was issued for")


def delegation_json(delegation: Delegation) -> dict[str, Any]:
    return {
        "id": delegation.id,
        "parent_request_id": delegation.parent_request_id,
        "agent": delegation.agent_id,
        "actions": list(delegation.actions),
        "targets": list(delegation.targets),
        "max_ttl": format_duration(delegation.max_ttl),
        "max_ttl_seconds": delegation.max_ttl_seconds,
        "depth": delegation.depth,
        "created_at": delegation.created_at.isoformat().replace("+00:00", "Z"),
    }


@router.post(
    "/v1/requests/{request_id}/delegations",
    status_code=201,
    tags=["delegation"],
    response_model=DelegationView,
    responses=problem_responses(401, 404, 409, 413, 422),
)
def delegate(
    request_id: RequestId, body: DelegationBody, request: Request, key: Agent
) -> JSONResponse:
    """Hand part of an active request to another agent (docs/delegation.md). Only the
    request's agent; only while it is active; only where its rule says ``delegable: true``
    and the chain stays within ``max_depth`` (409 otherwise)."""
    ctx = context_of(request)
    agent = key.identity(request)
    delegation = ctx.service.delegating.delegate(
        request_id,
        agent,
        child=body.agent,
        actions=body.actions,
        targets=body.targets,
        max_ttl=parse_duration(body.max_ttl),
        now=ctx.clock(),
    )
    return JSONResponse(
        delegation_json(delegation),
        status_code=201,
        headers={"Location": f"/v1/requests/{request_id}/delegations/{delegation.id}"},
    )


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    """RFC 6749 §5.2."""
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="stepup"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


class _Bad(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _form(raw: bytes, content_type: str) -> dict[str, str]:
    """The form's parameters, each once (RFC 6749 §3.2: no parameter repeated)."""
    if content_type != "application/x-www-form-urlencoded":
        raise _Bad("invalid_request", "the body must be application/x-www-form-urlencoded")
    try:
        text = raw.decode("utf-8")
        values = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError):
        raise _Bad("invalid_request", "the body is not a valid form") from None
    for name, given in values.items():
        if name in _PARAMETERS and len(given) > 1:
            raise _Bad("invalid_request", f"{name} is given more than once")
    return {name: given[0] for name, given in values.items() if name in _PARAMETERS}


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise _Bad("invalid_request", f"{name} is required")
    return value


def _check(form: dict[str, str]) -> None:
    if form.get("grant_type") != GRANT_TYPE:
        raise _Bad("unsupported_grant_type", f"grant_type must be {GRANT_TYPE}")
    _required(form, "subject_token")
    if _required(form, "subject_token_type") not in _SUBJECT_TYPES:
        raise _Bad("invalid_request", "subject_token_type: a stepup credential is a jwt")
    _required(form, "actor_token")
    if _required(form, "actor_token_type") not in _ACTOR_TYPES:
        raise _Bad("invalid_request", "actor_token_type: the actor's workload jwt or agent key")
    if form.get("requested_token_type") not in (None, JWT, ACCESS_TOKEN):
        raise _Bad("invalid_request", "requested_token_type: only a jwt access token is issued")
    if "resource" in form:
        raise _Bad("invalid_target", "resource is not supported: name the target in audience")
    if " " in _required(form, "scope"):
        raise _Bad("invalid_scope", "scope: one action (the child request's)")
    _required(form, "audience")


def _answer(exchanged: Exchanged, now: datetime, form: dict[str, str]) -> JSONResponse:
    issued = exchanged.claimed.credential
    body = {
        "access_token": issued.token,
        "issued_token_type": form.get("requested_token_type") or ACCESS_TOKEN,
        "token_type": issued.token_type,
        "expires_in": max(0, int((issued.expires_at - now).total_seconds())),
        "scope": issued.scope,
        "request_id": exchanged.claimed.request.id,
    }
    return JSONResponse(body, headers=_NO_STORE)


def _refusal(exc: StepupError) -> JSONResponse:
    if isinstance(exc, Unauthenticated):
        return oauth_error(401, "invalid_client", Unauthenticated().detail)
    if isinstance(exc, ExchangeRefused):
        return oauth_error(400, exc.error, exc.detail)
    if isinstance(exc, ValidationFailed):
        field = exc.detail.split(":", 1)[0]
        error = {"action": "invalid_scope", "target": "invalid_target"}.get(field)
        detail = exc.detail
        if error is not None:  # the request's names for them are the exchange's
            detail = ("scope" if field == "action" else "audience") + detail[len(field) :]
        return oauth_error(400, error or "invalid_request", detail)
    if isinstance(exc, NotFound):
        return oauth_error(
            400, "invalid_request", "no delegation of the subject's request to this actor"
        )
    if isinstance(exc, IllegalTransition | Conflict):
        return oauth_error(400, "invalid_request", exc.detail)
    raise exc


@router.post(
    "/v1/token",
    tags=["delegation"],
    response_model=TokenAnswer,
    responses={
        400: {"description": "RFC 6749 §5.2: {error, error_description}"},
        401: {"description": "The actor token did not authenticate (invalid_client)"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {name: {"type": "string"} for name in sorted(_PARAMETERS)},
                        "required": [
                            "grant_type",
                            "subject_token",
                            "subject_token_type",
                            "actor_token",
                            "actor_token_type",
                            "scope",
                            "audience",
                        ],
                    }
                }
            },
        }
    },
)
async def token(request: Request) -> JSONResponse:
    """RFC 8693 token exchange for the pre-authorised case of delegation: the parent's
    credential (``subject_token``) and the child agent's own token (``actor_token``) for a
    child credential with a narrower ``scope`` (action) and ``audience`` (target), under a
    delegation the parent made. Refused unless the policy allows the child's request as is."""
    ctx = context_of(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        form = _form(await request.body(), content_type)
        _check(form)
    except _Bad as bad:
        return oauth_error(400, bad.error, bad.description)

    def run() -> JSONResponse:
        now = ctx.clock()
        try:
            actor = ctx.registry.authenticate(form["actor_token"], now=now)
            exchanged = ctx.service.exchanging.exchange(
                form["subject_token"],
                actor,
                scope=form["scope"],
                audience=form["audience"],
                now=now,
            )
        except StepupError as exc:
            return _refusal(exc)
        return _answer(exchanged, now, form)

    return await run_in_threadpool(run)
