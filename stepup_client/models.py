"""What the server returns, parsed once into frozen values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

from stepup_client.dpop import DpopKey
from stepup_client.errors import (
    NotDpopBound,
    ProtocolError,
    RequestCancelled,
    RequestDenied,
    RequestExpired,
    RequestNotGranted,
    RequestRevoked,
)

T = TypeVar("T")


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    ACTIVE = "active"
    COMPLETED = "completed"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REVOKED = "revoked"

    @property
    def is_final(self) -> bool:
        return self in {
            Status.COMPLETED,
            Status.DENIED,
            Status.EXPIRED,
            Status.CANCELLED,
            Status.REVOKED,
        }


class ActionClass(StrEnum):
    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"
    SECRET_READ = "secret_read"  # noqa: S105 - an action class, not a secret
    DATA_EXPORT = "data_export"
    PRIVILEGE_CHANGE = "privilege_change"


class Outcome(StrEnum):
    """What the agent reports when it is done with a credential."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class ApproverInfo:
    name: str | None
    email: str | None
    slack_user_id: str | None
    at: datetime | None


@dataclass(frozen=True, slots=True)
class Approvals:
    required: int
    received: int
    approvers: tuple[ApproverInfo, ...]


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """Credential metadata on an active or finished request; never the secret."""

    jti: str
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the server returned it; ``raw`` keeps the whole JSON object."""

    id: str
    status: Status
    rule: str | None
    tier: str
    reasons: tuple[str, ...]
    action: str
    action_class: str
    target: str
    environment: str
    justification: str
    parameters: Mapping[str, Any] = field(hash=False)
    parameters_digest: str
    created_at: datetime
    expires_at: datetime | None
    decided_at: datetime | None
    approvals: Approvals
    outcome: str | None
    outcome_detail: str | None
    status_reason: str | None
    credential: CredentialInfo | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    callback_url: str | None = None
    # Submitted with ``claim=True`` and pre-authorised: the credential, claimed in the same
    # answer (returned this once; a replayed answer does not carry it).
    claimed: Credential | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any, *, dpop_key: DpopKey | None = None) -> Request:
        """``dpop_key``: the key of the DPoP proof a submit with ``claim`` carried."""
        body = _object(raw, "request")
        approvals = _object(body.get("approvals", {}), "approvals")
        credential = body.get("credential")
        status = _get(body, "status", str)
        try:
            parsed_status = Status(status)
        except ValueError:
            raise ProtocolError(f"unknown request status {status!r}") from None
        return cls(
            id=_get(body, "id", str),
            status=parsed_status,
            rule=_opt(body, "rule", str),
            tier=_get(body, "tier", str),
            reasons=tuple(_str_list(body.get("reasons", []), "reasons")),
            action=_get(body, "action", str),
            action_class=_get(body, "action_class", str),
            target=_get(body, "target", str),
            environment=_get(body, "environment", str),
            justification=_get(body, "justification", str),
            parameters=_object(body.get("parameters", {}), "parameters"),
            parameters_digest=_get(body, "parameters_digest", str),
            created_at=_time(_get(body, "created_at", str)),
            expires_at=_opt_time(body, "expires_at"),
            decided_at=_opt_time(body, "decided_at"),
            approvals=Approvals(
                required=_get(approvals, "required", int),
                received=_get(approvals, "received", int),
                approvers=tuple(
                    ApproverInfo(
                        name=_opt(item, "name", str),
                        email=_opt(item, "email", str),
                        slack_user_id=_opt(item, "slack_user_id", str),
                        at=_opt_time(item, "at"),
                    )
                    for item in (
                        _object(a, "approver") for a in _list(approvals.get("approvers", []))
                    )
                ),
            ),
            outcome=_opt(body, "outcome", str),
            outcome_detail=_opt(body, "outcome_detail", str),
            status_reason=_opt(body, "status_reason", str),
            credential=None if credential is None else _credential_info(credential),
            raw=body,
            callback_url=_opt(body, "callback_url", str),
            claimed=(
                Credential.from_json(credential, dpop_key=dpop_key)
                if isinstance(credential, Mapping) and "token" in credential
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class Delegation:
    """Part of an active request handed to another agent (docs/delegation.md)."""

    id: str
    parent_request_id: str
    agent: str
    actions: tuple[str, ...]
    targets: tuple[str, ...]
    max_ttl_seconds: int
    depth: int
    created_at: datetime

    @classmethod
    def from_json(cls, raw: Any) -> Delegation:
        body = _object(raw, "delegation")
        return cls(
            id=_get(body, "id", str),
            parent_request_id=_get(body, "parent_request_id", str),
            agent=_get(body, "agent", str),
            actions=tuple(str(a) for a in _get(body, "actions", list)),
            targets=tuple(str(t) for t in _get(body, "targets", list)),
            max_ttl_seconds=_get(body, "max_ttl_seconds", int),
            depth=_get(body, "depth", int),
            created_at=_time(_get(body, "created_at", str)),
        )


@dataclass(frozen=True, slots=True)
class Credential:
    """A claimed credential. The token is left out of ``repr`` so it cannot leak into logs."""

    token: str = field(repr=False)
    token_type: str
    expires_at: datetime
    scope: str
    jti: str
    request_id: str
    # ``jwt``, or the rule's issuer type (postgres, vault, aws_sts, github_app, http) with the
    # credential it minted in ``secret`` (docs/issuers.md); kept out of ``repr`` too.
    credential_type: str = "jwt"
    secret: Mapping[str, Any] | None = field(default=None, repr=False)
    # The key a ``DPoP`` token is bound to (``cnf.jkt``): it signs the proofs that go with it.
    dpop_key: DpopKey | None = field(default=None, repr=False, compare=False)

    @property
    def authorization(self) -> str:
        """The value of an ``Authorization`` header for the target system: ``Bearer <token>``
        or, for a token bound to the client's key, ``DPoP <token>`` (send ``dpop_proof`` too)."""
        return f"{self.token_type} {self.token}"

    @property
    def is_dpop_bound(self) -> bool:
        return self.token_type.lower() == "dpop"

    def dpop_proof(self, method: str, url: str) -> str:
        """A fresh ``DPoP`` header value for one call to the target (``method url``), with the
        token's hash (``ath``). One per call: the target refuses a proof it has seen."""
        if not self.is_dpop_bound or self.dpop_key is None:
            raise NotDpopBound(f"credential {self.jti} is a {self.token_type} token")
        return self.dpop_key.proof(method, url, access_token=self.token)

    @classmethod
    def from_json(cls, raw: Any, *, dpop_key: DpopKey | None = None) -> Credential:
        """``dpop_key``: the key the claim's proof was made with; kept only if the server
        bound the token to it (``token_type`` ``DPoP``; a server without DPoP ignores it)."""
        body = _object(raw, "credential")
        token_type = _get(body, "token_type", str)
        return cls(
            token=_get(body, "token", str),
            token_type=token_type,
            expires_at=_time(_get(body, "expires_at", str)),
            scope=_get(body, "scope", str),
            jti=_get(body, "jti", str),
            request_id=_get(body, "request_id", str),
            credential_type=str(body.get("credential_type", "jwt")),
            secret=_secret(body.get("secret")),
            dpop_key=dpop_key if token_type.lower() == "dpop" else None,
        )


def _secret(raw: Any) -> Mapping[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProtocolError("credential.secret: expected an object")
    return MappingProxyType(raw)


_NOT_GRANTED: dict[Status, type[RequestNotGranted]] = {
    Status.DENIED: RequestDenied,
    Status.EXPIRED: RequestExpired,
    Status.CANCELLED: RequestCancelled,
    Status.REVOKED: RequestRevoked,
}


def settled(request: Request) -> Request:
    """The request if it may still be used; its typed error if it ended without approval."""
    error = _NOT_GRANTED.get(request.status)
    if error is not None:
        raise error(request)
    return request


def _credential_info(raw: Any) -> CredentialInfo:
    body = _object(raw, "credential")
    return CredentialInfo(
        jti=_get(body, "jti", str),
        expires_at=_time(_get(body, "expires_at", str)),
        revoked_at=_opt_time(body, "revoked_at"),
    )


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: expected a JSON object")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError("expected a JSON array")
    return value


def _str_list(value: Any, what: str) -> list[str]:
    items = _list(value)
    if not all(isinstance(item, str) for item in items):
        raise ProtocolError(f"{what}: expected strings")
    return items


def _get(body: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = body.get(key)
    # bool is an int in Python; a JSON true is never a count.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _opt(body: Mapping[str, Any], key: str, kind: type[T]) -> T | None:
    return None if body.get(key) is None else _get(body, key, kind)


def _time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(f"not an ISO 8601 time: {text!r}") from None


def _opt_time(body: Mapping[str, Any], key: str) -> datetime | None:
    text = _opt(body, key, str)
    return None if text is None else _time(text)
