"""What the agent API answers, declared so that ``/openapi.json`` describes it.

The request routes answer a prebuilt dict (``bot.api.rendering.request_json``) without
validating it on the way out; ``tests/integration/test_api_documents.py`` proves that every
status renders to a document these models accept unchanged, so the two cannot drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from core.model import ActionClass, SessionOutcome, Status, Tier


def _absent_not_null(schema: JsonDict) -> None:
    """A key that is left out rather than null: no ``default: null`` in the document."""
    schema.pop("default", None)


class Approver(BaseModel):
    """One distinct person who approved."""

    name: str | None
    email: str | None
    slack_user_id: str
    at: datetime


class Approvals(BaseModel):
    required: int = Field(ge=0, description="Distinct approvals the rule needs (0: none)")
    received: int = Field(ge=0)
    approvers: list[Approver]


class CredentialMetadata(BaseModel):
    """The credential of an ``active`` or later request: never the secret."""

    jti: str
    expires_at: datetime
    revoked_at: datetime | None


class BreakGlassReview(BaseModel):
    """Who reviewed a break-glass grant after the fact; both null until someone does."""

    reviewed_at: datetime | None
    reviewed_by: str | None


class RequestView(BaseModel):
    """A request as an agent sees it."""

    id: str
    status: Status
    rule: str | None = Field(description="The policy rule that matched; null when none did")
    tier: Tier
    reasons: list[str]
    agent: str = Field(description="The agent id, taken from its key")
    action: str
    action_class: ActionClass
    target: str
    environment: str
    justification: str
    parameters: dict[str, Any]
    parameters_digest: str = Field(
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="sha256 of `parameters` in RFC 8785 canonical JSON (JCS)",
    )
    requested_ttl_seconds: int | None
    data_volume_bytes: int | None
    on_behalf_of: str | None
    sponsor_verified: bool = Field(
        description="on_behalf_of came from the workload token's claims; false: only stated "
        "by the agent (docs/identity.md)"
    )
    parent_request_id: str | None
    break_glass: bool
    created_at: datetime
    expires_at: datetime | None = Field(description="The approval or claim deadline")
    decided_at: datetime | None
    approvals: Approvals
    outcome: SessionOutcome | None = Field(description="What the agent reported on completion")
    outcome_detail: str | None
    status_reason: str | None
    break_glass_review: BreakGlassReview | SkipJsonSchema[None] = Field(
        default=None,
        description="Present on break-glass requests only",
        json_schema_extra=_absent_not_null,
    )
    credential: CredentialMetadata | SkipJsonSchema[None] = Field(
        default=None,
        description="Present once a credential was minted",
        json_schema_extra=_absent_not_null,
    )
    callback_url: str | None = Field(
        description="Where each status change is POSTed, signed (docs/callbacks.md)"
    )


class ClaimAnswer(BaseModel):
    """The credential, returned once. Present it to the target as ``token_type token``."""

    token: str
    token_type: str = Field(
        examples=["Bearer", "DPoP"],
        description="``DPoP`` when the claim carried a DPoP proof: the token is bound to its key "
        "(``cnf.jkt``) and is presented with a fresh proof (docs/dpop.md)",
    )
    expires_at: datetime
    scope: str = Field(description="The request's action")
    jti: str
    request_id: str
    credential_type: str = Field(
        description="``jwt`` (the token above is the credential), or the type of the rule's "
        "issuer: postgres, vault, aws_sts, github_app, http (docs/issuers.md)",
        examples=["jwt", "postgres"],
    )
    secret: dict[str, Any] | SkipJsonSchema[None] = Field(
        default=None,
        description="The credential the issuer minted (shape per credential_type), shown once "
        "and stored nowhere; absent for jwt. The token above stays the proof of approval.",
        json_schema_extra=_absent_not_null,
    )


class ClaimedCredential(CredentialMetadata):
    """The credential of a request claimed in its submit's answer (``"claim": true``): its
    metadata and, this once, the claim answer's fields."""

    token: str
    token_type: str
    scope: str
    request_id: str
    credential_type: str
    secret: dict[str, Any] | SkipJsonSchema[None] = Field(
        default=None,
        description="As in the claim answer: an issuer's credential, shown once",
        json_schema_extra=_absent_not_null,
    )


class SubmitAnswer(RequestView):
    """A submitted request. With ``"claim": true`` and a pre-authorised request it is already
    ``active`` and its ``credential`` carries the token, returned this once."""

    credential: ClaimedCredential | CredentialMetadata | SkipJsonSchema[None] = Field(
        default=None,
        description="The claimed credential (submit with claim), or its metadata",
        json_schema_extra=_absent_not_null,
    )


class Introspection(BaseModel):
    """RFC 7662. An inactive token is ``{"active": false}`` and nothing else."""

    active: bool
    scope: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    client_id: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    sub: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    aud: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    iss: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    exp: int | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    iat: int | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    nbf: int | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    jti: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    token_type: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    request_id: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    args_digest: str | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_absent_not_null
    )
    env: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent_not_null)
    approvers: list[str] | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_absent_not_null
    )
    on_behalf_of: str | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_absent_not_null
    )
    cnf: dict[str, str] | SkipJsonSchema[None] = Field(
        default=None,
        description='RFC 9449: the DPoP key the token is bound to, ``{"jkt": thumbprint}``',
        json_schema_extra=_absent_not_null,
    )
    act: dict[str, Any] | SkipJsonSchema[None] = Field(
        default=None,
        description="RFC 8693: a delegated request's chain (docs/delegation.md): the current "
        'actor, nesting earlier ones, ``{"sub": child, "act": {"sub": …}}``; ``sub`` is '
        "then the root agent",
        json_schema_extra=_absent_not_null,
    )
    parent_request_id: str | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_absent_not_null
    )


_TOKEN = {
    "type": "object",
    "properties": {"token": {"type": "string", "minLength": 1}},
    "required": ["token"],
}
# The introspection route reads its body itself (form or JSON, RFC 7662 §2.1).
INTROSPECTION_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {"schema": _TOKEN},
        "application/json": {"schema": _TOKEN},
    },
}


class Jwk(BaseModel):
    """An Ed25519 public key (RFC 8037)."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    use: Literal["sig"]
    alg: Literal["EdDSA"]


class Jwks(BaseModel):
    keys: list[Jwk] = Field(description="The active key first, then retired ones")


class Health(BaseModel):
    status: Literal["ok"]


class FieldProblem(BaseModel):
    field: str = Field(examples=["action_class"])
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, served as ``application/problem+json``."""

    type: str = Field(examples=["https://stepup.dev/problems/not-found"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    current_status: Status | SkipJsonSchema[None] = Field(
        default=None,
        description="On 409 for a transition the request's status does not allow",
        json_schema_extra=_absent_not_null,
    )
    errors: list[FieldProblem] | SkipJsonSchema[None] = Field(
        default=None,
        description="On 422 for invalid input: each bad field",
        json_schema_extra=_absent_not_null,
    )


_PROBLEMS = {
    400: "A DPoP proof that does not hold, or none where the rule requires one; nothing claimed",
    401: "Missing, unknown or disabled key (the same answer whichever it was)",
    404: "No such request, or another agent's",
    409: "Not allowed in the request's current status, or a lost race",
    413: "Body over 64 KiB",
    422: "Invalid input: each bad field is named",
    429: "Too many pending requests or submissions for this agent; see Retry-After",
    502: "The rule's credential issuer failed; nothing was claimed, claim again",
    503: "Overloaded: refused before anything was done (admission control, docs/scaling.md); "
    "send it again after Retry-After",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for these error statuses, all problem details.

    FastAPI files an additional model under the route's own media type; ``problems.install``
    moves them to ``application/problem+json`` in the document.
    """
    # Every API route may be refused by admission control (bot/api/admission.py).
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": Problem, "description": _PROBLEMS[status]}
        for status in dict.fromkeys((*statuses, 503))
    }
    for status in (429, 503):
        if status in responses:
            responses[status]["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before sending it again",
                    "schema": {"type": "integer"},
                }
            }
    if 401 in responses:
        responses[401]["headers"] = {
            "WWW-Authenticate": {
                "description": 'Bearer realm="stepup"',
                "schema": {"type": "string"},
            }
        }
    return responses
