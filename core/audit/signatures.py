"""Checks the signed decisions embedded in audit entries against the service's keys."""

from __future__ import annotations

import json

import jwt

from core.audit.chain import AuditEntry, EntryCheck
from core.audit.events import AuditKind
from core.decisions import verify_decision
from core.errors import InvalidToken
from core.keys import KeyRing, RejectedToken


def signature_problem(token: str, exc: InvalidToken) -> str:
    """Why ``token`` did not verify, in words: an unknown key is named by its ``kid`` (an
    auditor given too few public keys sees which one is missing); anything else by reason."""
    reason = exc.reason if isinstance(exc, RejectedToken) else "invalid"
    if reason == "unknown_kid":
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            kid = None
        return f"signed by key {str(kid)[:64]!r}, which is not among the public keys given"
    return f"invalid signature: {reason}"


def decision_signature_check(keyring: KeyRing) -> EntryCheck:
    """For decision.recorded entries: the JWS verifies, and says what the entry says (request,
    vote, and the approver as its actor)."""

    def check(entry: AuditEntry) -> None:
        if entry.kind != AuditKind.DECISION_RECORDED.value:
            return
        data = json.loads(entry.data)
        token = data.get("signed_decision")
        try:
            record = verify_decision(token, keyring)
        except InvalidToken as exc:
            raise ValueError(
                f"bad decision signature ({signature_problem(str(token), exc)})"
            ) from None
        approver = record.approver_email or record.approver_slack_id
        if (
            record.request_id != entry.request_id
            or record.decision.value != data.get("vote")
            or approver != entry.actor
        ):
            raise ValueError(
                "bad decision signature (the signed decision does not match the entry it is in)"
            )

    return check
