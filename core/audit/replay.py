"""A request as its audit entries tell it: replayed through the service's transition table.

The request row is what the service acts on (a claim succeeds when the row says
``approved``); the log is the evidence. Whoever can write to the database can change a row
without writing an entry, so verifying replays each request's entries and compares the result
with the row (``core/audit/crosscheck.py``). The replay reads only what entries record:

- ``intent.submitted``: the submitted fields (action, target, environment, agent, digest...);
- ``policy.decided``: the first status (pending, approved or denied), and the rule, tier and
  terms the request is held to (an approval needs the logged quorum of signed approvers, a
  credential may not outlive the logged max TTL);
- ``request.*``, ``credential.issued``, ``session.completed``: one lifecycle event each;
- ``credential.revoked``: the credential is off the list, and an active request ends
  (revoked, or completed when ``session.completed`` follows, as written in one step);
- ``decision.recorded``: one signed vote; ``break_glass.reviewed``: who reviewed it.

``delegation.created`` (under the parent request) and ``token.exchanged`` (under the child)
record delegation (docs/delegation.md) and change no request's status: they are not lifecycle
events and the replay passes over them. A descendant ended with its ancestor has its own
``credential.revoked``, ``request.revoked`` or ``request.cancelled`` entry (with the reason).

People decide by signed decisions only: an approval (``request.approved``) must name
approvers who each signed an approval before it, a denial must come from a signed denial.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core.audit.chain import AuditEntry
from core.audit.events import AuditKind
from core.errors import IllegalTransition
from core.lifecycle import Event, next_status
from core.model import Status, Vote

_EVENTS = {
    AuditKind.REQUEST_APPROVED.value: Event.APPROVE,
    AuditKind.REQUEST_DENIED.value: Event.DENY,
    AuditKind.REQUEST_EXPIRED.value: Event.EXPIRE,
    AuditKind.REQUEST_CANCELLED.value: Event.CANCEL,
    AuditKind.REQUEST_REVOKED.value: Event.REVOKE,
    AuditKind.CREDENTIAL_ISSUED.value: Event.CLAIM,
    AuditKind.SESSION_COMPLETED.value: Event.COMPLETE,
}


@dataclass(frozen=True, slots=True)
class LoggedVote:
    seq: int
    who: str  # the entry's actor: the approver's email, else Slack id
    vote: str
    signed: str  # the signed decision (JWS), as the vote row must hold it


@dataclass(slots=True)
class LoggedCredential:
    jti: str
    expires_at: datetime | None
    scope: str | None
    audience: str | None
    revoked: bool = False


@dataclass(slots=True)
class Replayed:
    """One request as its entries tell it; ``problems`` are entries the lifecycle forbids."""

    request_id: str
    first_seq: int
    intent: dict[str, Any] | None = None
    status: Status | None = None
    votes: list[LoggedVote] = field(default_factory=list)
    credentials: dict[str, LoggedCredential] = field(default_factory=dict)
    current_jti: str | None = None
    reviewed_by: str | None = None
    decision: dict[str, Any] | None = None  # the policy decision as logged (rule, terms...)
    problems: list[str] = field(default_factory=list)
    _ended_by_revocation: bool = False

    def apply(self, entry: AuditEntry) -> None:
        kind = entry.kind
        if kind in _EVENTS:
            self._transition(entry, _EVENTS[kind])
            if kind == AuditKind.CREDENTIAL_ISSUED.value:
                self._issued(entry)
            elif kind == AuditKind.REQUEST_APPROVED.value:
                self._check_signed(entry, Vote.APPROVE, _data(entry).get("approvers"))
            elif kind == AuditKind.REQUEST_DENIED.value:
                self._check_signed(entry, Vote.DENY, [entry.actor])
        elif kind == AuditKind.CREDENTIAL_REVOKED.value:
            self._credential_revoked(entry)
        elif kind == AuditKind.INTENT_SUBMITTED.value:
            self.intent = _data(entry)
        elif kind == AuditKind.POLICY_DECIDED.value:
            self._policy_decided(entry)
        elif kind == AuditKind.DECISION_RECORDED.value:
            data = _data(entry)
            self.votes.append(
                LoggedVote(
                    entry.seq,
                    entry.actor or "",
                    str(data.get("vote")),
                    str(data.get("signed_decision")),
                )
            )
        elif kind == AuditKind.BREAK_GLASS_REVIEWED.value:
            self.reviewed_by = entry.actor

    def _policy_decided(self, entry: AuditEntry) -> None:
        if self.status is not None:
            self.problems.append(f"entry {entry.seq}: a second policy decision")
            return
        self.decision = _data(entry)
        try:
            self.status = Status(str(self.decision.get("status")))
        except ValueError:
            self.problems.append(f"entry {entry.seq}: a policy decision without a status")

    def _transition(self, entry: AuditEntry, event: Event) -> None:
        if event is Event.COMPLETE and self._ended_by_revocation and self.status is Status.REVOKED:
            # complete writes the credential's revocation, then the outcome, in one step
            self.status = Status.COMPLETED
            self._ended_by_revocation = False
            return
        self._ended_by_revocation = False
        if self.status is None:
            self.problems.append(f"entry {entry.seq}: {entry.kind} before any policy decision")
            return
        try:
            self.status = next_status(self.status, event)
        except IllegalTransition:
            self.problems.append(
                f"entry {entry.seq}: {entry.kind} while the request was {self.status.value}"
            )

    def _check_signed(self, entry: AuditEntry, vote: Vote, people: object) -> None:
        """People decide only by signed decisions: an approval must name approvers, each
        with a signed approval of this request before it; a denial its signed denial. (An
        entry added with the chain recomputed holds no signature: it is caught here.)"""
        signed = {v.who.strip().lower() for v in self.votes if v.vote == vote.value}
        named = [str(p).strip().lower() for p in people] if isinstance(people, list) else []
        unsigned = [p for p in named if p not in signed]
        if not named or unsigned:
            self.problems.append(
                f"entry {entry.seq}: {entry.kind} names no one, or someone without a signed "
                f"{vote.value} in the log ({', '.join(ascii(p) for p in unsigned) or 'nobody'})"
            )
        quorum = self._term("quorum")
        if vote is Vote.APPROVE and isinstance(quorum, int) and len(set(named)) < quorum:
            self.problems.append(
                f"entry {entry.seq}: approved by {len(set(named))} of the {quorum} people "
                "the logged policy decision requires"
            )

    def _term(self, name: str) -> object:
        """One of the terms the policy decision logged (None for entries logged before terms
        were part of the decision)."""
        terms = (self.decision or {}).get("terms")
        return terms.get(name) if isinstance(terms, dict) else None

    def _issued(self, entry: AuditEntry) -> None:
        data = _data(entry)
        jti = str(data.get("jti"))
        expires_at = _time(data.get("expires_at"))
        self.credentials[jti] = LoggedCredential(
            jti, expires_at, _text(data.get("scope")), _text(data.get("aud"))
        )
        self.current_jti = jti
        longest = self._term("max_ttl_seconds")
        if (
            isinstance(longest, int)
            and expires_at is not None
            and expires_at > entry.at + timedelta(seconds=longest + 1)
        ):
            self.problems.append(
                f"entry {entry.seq}: a credential living past the {longest} s the logged "
                "policy decision allows"
            )

    def _credential_revoked(self, entry: AuditEntry) -> None:
        jti = str(_data(entry).get("jti"))
        credential = self.credentials.get(jti)
        if credential is None:
            self.problems.append(f"entry {entry.seq}: revokes credential {jti!r}, never issued")
            return
        credential.revoked = True
        # Every exit from active revokes the credential first; only that entry tells of it
        # when the request is revoked or its TTL ran out.
        if self.status is Status.ACTIVE:
            self.status = Status.REVOKED
            self._ended_by_revocation = True


def replay(request_id: str, entries: Iterable[AuditEntry]) -> Replayed | None:
    """The request as ``entries`` (its own, in seq order) tell it; None when there are none."""
    replayed: Replayed | None = None
    for entry in entries:
        if replayed is None:
            replayed = Replayed(request_id, entry.seq)
        replayed.apply(entry)
    return replayed


def _data(entry: AuditEntry) -> dict[str, Any]:
    value = json.loads(entry.data)
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
