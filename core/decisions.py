"""Signed decisions (docs/audit.md): each approver click as a JWS anyone can check with the JWKS.

The signature binds who decided, what, when, and on which exact arguments
(``parameters_digest``). Decisions do not expire: they are evidence in the audit log, which is
why retired public keys stay in the key ring for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.keys import KeyRing, RejectedToken
from core.model import Vote

DECISION_TYPE = "stepup-decision+jwt"


@dataclass(frozen=True)
class DecisionRecord:
    """One approver's vote on one request, as signed."""

    request_id: str
    parameters_digest: str
    decision: Vote
    approver_slack_id: str
    approver_email: str | None
    decided_at: datetime  # aware
    rule: str | None
    reason: str | None

    def __post_init__(self) -> None:
        if not isinstance(self.decision, Vote):
            raise TypeError("decision must be a Vote")
        if self.decided_at.tzinfo is None or self.decided_at.utcoffset() is None:
            raise ValueError("decided_at must be a timezone-aware datetime")


def sign_decision(record: DecisionRecord, keyring: KeyRing) -> str:
    """A compact JWS of ``record`` (alg EdDSA, ``typ: stepup-decision+jwt``, ``kid``)."""
    payload: dict[str, Any] = {
        "request_id": record.request_id,
        "parameters_digest": record.parameters_digest,
        "decision": record.decision.value,
        "approver_slack_id": record.approver_slack_id,
        # Microseconds kept, so the record round-trips exactly; iat for JWT tooling.
        "decided_at": record.decided_at.astimezone(UTC).isoformat(),
        "iat": int(record.decided_at.timestamp()),
    }
    optional = {
        "approver_email": record.approver_email,
        "rule": record.rule,
        "reason": record.reason,
    }
    payload.update({name: value for name, value in optional.items() if value is not None})
    return keyring.sign(payload, typ=DECISION_TYPE)


def verify_decision(jws: str, keyring: KeyRing) -> DecisionRecord:
    """The record inside a decision signed by a key of ``keyring``; else ``InvalidToken``."""
    payload = keyring.verify(jws, typ=DECISION_TYPE)
    try:
        decided_at = datetime.fromisoformat(_text(payload, "decided_at"))
        return DecisionRecord(
            request_id=_text(payload, "request_id"),
            parameters_digest=_text(payload, "parameters_digest"),
            decision=Vote(_text(payload, "decision")),
            approver_slack_id=_text(payload, "approver_slack_id"),
            approver_email=_optional_text(payload, "approver_email"),
            decided_at=decided_at,
            rule=_optional_text(payload, "rule"),
            reason=_optional_text(payload, "reason"),
        )
    except (ValueError, TypeError):
        raise RejectedToken("malformed_claim") from None


def _text(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str):
        raise RejectedToken("malformed_claim")
    return value


def _optional_text(payload: dict[str, Any], name: str) -> str | None:
    if payload.get(name) is None:
        return None
    return _text(payload, name)
