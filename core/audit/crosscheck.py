"""Comparing a stored request with its replayed audit entries, field by field.

Each difference is one ``Mismatch`` that names the request and the field, with both values:
``request req_… : status is 'approved' in the database, the audit log says 'pending'``.
What is compared: the status; the submitted fields a credential binds to (agent, action,
class, target, environment, parameters digest; and the rest of the intent) and that the
stored parameters still hash to their digest; every vote (who, what, and that the row holds
the very signed decision the log holds); every credential (jti, expiry, scope, audience,
revocation); and who reviewed a break-glass use.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.audit.replay import LoggedVote, Replayed
from core.canonical import canonical_digest, parameters_digest
from core.decisions import verify_decision
from core.errors import InvalidToken, ValidationFailed
from core.keys import KeyRing

# The intent's fields as ``intent.submitted`` records them; each is also a request column
# (``agent`` is ``agent_id``). The first six are what a credential is bound to.
INTENT_FIELDS = (
    "agent",
    "action",
    "action_class",
    "target",
    "environment",
    "parameters_digest",
    "on_behalf_of",
    "parent_request_id",
    "break_glass",
    "requested_ttl_seconds",
    "data_volume_bytes",
    "justification",
)
# The policy decision's fields as ``policy.decided`` records them; each is a request column
# (``reasons`` and ``terms`` as JSON). The terms are what the service holds the request to.
DECISION_FIELDS = ("rule", "tier", "reasons", "policy_digest", "terms")
_SHOWN_CHARS = 80


@dataclass(frozen=True, slots=True)
class StoredVote:
    slack_user_id: str
    email: str | None
    vote: str
    signature: str

    @property
    def who(self) -> str:
        return self.email or self.slack_user_id


@dataclass(frozen=True, slots=True)
class StoredCredential:
    jti: str
    agent_id: str
    scope: str
    audience: str
    expires_at: datetime
    revoked: bool


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """A request row, its votes and its credentials, as the database holds them."""

    id: str
    status: str
    intent: Mapping[str, Any]  # INTENT_FIELDS, from the row's columns
    parameters: str  # canonical JSON
    credential_jti: str | None
    credential_expires_at: datetime | None
    reviewed_by: str | None
    votes: tuple[StoredVote, ...]
    credentials: tuple[StoredCredential, ...]
    decision: Mapping[str, Any] = field(default_factory=dict)  # DECISION_FIELDS, parsed


@dataclass(frozen=True, slots=True)
class Mismatch:
    request_id: str
    field: str
    detail: str

    def __str__(self) -> str:
        return f"request {self.request_id}: {self.detail}"


def shown(value: object) -> str:
    """A value for a one-line report: quoted, escaped to ASCII, cut at 80 characters."""
    if value is None:
        return "none"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return ascii(value[:_SHOWN_CHARS]) + ("…" if len(value) > _SHOWN_CHARS else "")
    return str(value)


def compare(
    replayed: Replayed | None, stored: StoredRequest | None, keyring: KeyRing | None
) -> Iterator[Mismatch]:
    """Every difference between a stored request and its replayed entries."""
    if stored is None:
        assert replayed is not None
        yield Mismatch(
            replayed.request_id,
            "request",
            f"in the audit log (first at entry {replayed.first_seq}) but not in the database",
        )
        return
    if replayed is None:
        yield Mismatch(stored.id, "request", "in the database, but the audit log has no entry")
        return
    check = _Check(stored.id)
    for problem in replayed.problems:
        check.say("lifecycle", f"the audit log is not a valid lifecycle: {problem}")
    logged_status = replayed.status.value if replayed.status is not None else None
    check.differ("status", stored.status, logged_status)
    _compare_intent(check, replayed.intent, stored)
    for name in DECISION_FIELDS:
        if replayed.decision is not None and name in replayed.decision:
            check.differ(name, stored.decision.get(name), replayed.decision[name])
    _compare_votes(check, replayed.votes, stored.votes, keyring)
    _compare_credentials(check, replayed, stored)
    check.differ("break_glass_reviewed_by", stored.reviewed_by, replayed.reviewed_by)
    yield from check.found


class _Check:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.found: list[Mismatch] = []

    def say(self, name: str, detail: str) -> None:
        self.found.append(Mismatch(self.request_id, name, detail))

    def differ(self, name: str, in_database: object, in_log: object) -> None:
        if in_database != in_log:
            self.say(
                name,
                f"{name} is {shown(in_database)} in the database, "
                f"the audit log says {shown(in_log)}",
            )


def _compare_intent(check: _Check, intent: dict[str, Any] | None, stored: StoredRequest) -> None:
    if intent is None:
        check.say("intent", "the audit log has no submitted intent for it")
    else:
        for name in INTENT_FIELDS:
            if name in intent:
                check.differ(name, stored.intent.get(name), intent[name])
    digest = stored.intent.get("parameters_digest")
    if not _parameters_match(stored.parameters, digest):
        check.say(
            "parameters",
            f"parameters in the database do not hash to its parameters_digest {shown(digest)}",
        )


def _parameters_match(parameters: str, digest: object) -> bool:
    try:
        value = json.loads(parameters)
    except ValueError:
        return False
    # Requests recorded before RFC 8785 digests carry the earlier canonical-JSON digest.
    if digest == canonical_digest(value):
        return True
    try:
        return digest == parameters_digest(value)
    except ValidationFailed:
        return False


def _compare_votes(
    check: _Check,
    logged: list[LoggedVote],
    stored: tuple[StoredVote, ...],
    keyring: KeyRing | None,
) -> None:
    by_signature = {vote.signed: vote for vote in logged}
    for row in stored:
        entry = by_signature.pop(row.signature, None)
        if entry is None:
            check.say(
                "votes",
                f"vote by {shown(row.who)} ({shown(row.vote)}) is in the database but not in "
                f"the audit log{_signature_note(row, check.request_id, keyring)}",
            )
            continue
        # The row holds the very JWS the log holds (verified with the chain): what the row
        # says beside it must be what was signed.
        claims = _claims(row.signature)
        for name, in_database, signed in (
            ("vote", row.vote, claims.get("decision")),
            ("approver_slack_id", row.slack_user_id, claims.get("approver_slack_id")),
            ("approver_email", row.email, claims.get("approver_email")),
        ):
            if in_database != signed:
                check.say(
                    "votes",
                    f"vote by {shown(entry.who)} (entry {entry.seq}): {name} is "
                    f"{shown(in_database)} in the database, its signed decision says "
                    f"{shown(signed)}",
                )
    for entry in sorted(by_signature.values(), key=lambda v: v.seq):
        check.say(
            "votes",
            f"vote by {shown(entry.who)} ({shown(entry.vote)}, entry {entry.seq}) is in the "
            "audit log but not in the database",
        )


def _signature_note(row: StoredVote, request_id: str, keyring: KeyRing | None) -> str:
    if keyring is None:
        return ""
    try:
        record = verify_decision(row.signature, keyring)
    except InvalidToken:
        return "; its signature does not verify"
    if record.request_id != request_id:
        return f"; its signed decision is for request {shown(record.request_id)}"
    return ""


def _claims(token: str) -> dict[str, Any]:
    """A JWS's payload, unverified: only for a token equal to one already verified."""
    try:
        payload = token.split(".")[1]
        value = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _compare_credentials(check: _Check, replayed: Replayed, stored: StoredRequest) -> None:
    check.differ("credential_jti", stored.credential_jti, replayed.current_jti)
    current = replayed.credentials.get(replayed.current_jti or "")
    check.differ(
        "credential_expires_at",
        stored.credential_expires_at,
        current.expires_at if current is not None else None,
    )
    logged = dict(replayed.credentials)
    for row in stored.credentials:
        entry = logged.pop(row.jti, None)
        if entry is None:
            check.say(
                "credentials",
                f"credential {shown(row.jti)} is in the database but the audit log never issued it",
            )
            continue
        name = f"credential {shown(row.jti)}"
        for what, in_database, in_log in (
            ("expires_at", row.expires_at, entry.expires_at),
            ("scope", row.scope, entry.scope),
            ("audience", row.audience, entry.audience),
            ("agent", row.agent_id, (replayed.intent or {}).get("agent")),
        ):
            if in_database != in_log:
                check.say(
                    "credentials",
                    f"{name}: {what} is {shown(in_database)} in the database, the audit log "
                    f"says {shown(in_log)}",
                )
        if row.revoked != entry.revoked:
            check.say(
                "credentials",
                f"{name} is {_revoked(row.revoked)} in the database, the audit log says "
                f"{_revoked(entry.revoked)}",
            )
    for entry in logged.values():
        check.say(
            "credentials",
            f"credential {shown(entry.jti)} was issued in the audit log but is not in the database",
        )


def _revoked(revoked: bool) -> str:
    return "revoked" if revoked else "not revoked"
