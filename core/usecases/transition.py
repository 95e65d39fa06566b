"""The one path every state change of a request takes.

A use case opens a unit of work (``changing``), loads the request locked, decides with the
pure rules, and hands ``apply`` one ``Step`` per request. ``apply`` then, always and in this
order: refuses an event whose deadline passed, computes the next status with the transition
table, revokes the credential on every exit from ``active``, writes the change with a
compare-and-set on the version, writes the event's audit entries, and queues what people must
be told. A step that ends a request also ends its live descendants (requests below it through
``parent_request_id``, docs/delegation.md) in the same call: pending ones cancelled, approved
or active ones revoked, each with its own audit entry. When the unit of work commits, every
changed request is published to the listeners.
A new state change is a new ``Step``; it cannot forget one of these.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.audit.events import AuditLog
from core.credentials import revocation_is_the_list
from core.facts import Fact, FactKind
from core.lifecycle import Event, check_deadline, next_status
from core.model import Status
from core.notices import Notices
from core.snapshots import RequestSnapshot
from core.store import StoreTx, advance
from core.usecases.parts import Parts

# Events that grant or decide: refused once the request's deadline passed, even if no sweep
# has expired it yet. Withdrawing (cancel, complete, revoke) is always allowed.
_DEADLINE_GUARDED = frozenset({Event.APPROVE, Event.DENY, Event.CLAIM})
# Events that end an active request: each one revokes its credential.
_ENDS_SESSION = frozenset({Event.COMPLETE, Event.REVOKE, Event.EXPIRE})
_FACTS = {
    Event.APPROVE: FactKind.APPROVED,
    Event.DENY: FactKind.DENIED,
    Event.EXPIRE: FactKind.EXPIRED,
    Event.CANCEL: FactKind.CANCELLED,
    Event.CLAIM: FactKind.CLAIMED,
    Event.COMPLETE: FactKind.COMPLETED,
    Event.REVOKE: FactKind.REVOKED,
}
# Requests a cascade ends (pending: cancelled; approved, active: revoked), at every level below
# an ending request.
_LIVE = frozenset({Status.PENDING, Status.APPROVED, Status.ACTIVE})
# The sponsor hears of decisions and of ends they did not cause themselves.
_SPONSOR_HEARS = frozenset({Event.APPROVE, Event.DENY, Event.COMPLETE, Event.REVOKE})


@dataclass(frozen=True, slots=True)
class Step:
    """One change to one request.

    ``event`` None keeps the status (a vote short of the quorum, an escalation stage, a
    break-glass review): the caller writes that step's audit entry and gives its ``fact``.
    ``detail`` carries what the event's audit entry and fact need (approvers, the credential,
    the outcome).
    """

    snapshot: RequestSnapshot
    event: Event | None
    actor: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    fact: Fact | None = None
    refresh_card: bool = True


class UnitOfWork:
    """One transaction of state changes; see the module's docstring."""

    def __init__(self, parts: Parts, tx: StoreTx, now: datetime) -> None:
        self.parts = parts
        self.tx = tx
        self.now = now
        self.notices = Notices(tx.outbox, now)
        self.changed: dict[str, RequestSnapshot] = {}
        self.revoked_at_issuers: list[str] = []  # jtis whose issuer must be called
        self.settled_builtin: list[tuple[str, str]] = []  # built-in JWTs: (request id, jti)

    @property
    def audit(self) -> AuditLog:
        return self.tx.audit

    def load(self, request_id: str, *, agent_id: str | None = None) -> RequestSnapshot:
        """The request, locked until the unit of work ends."""
        return self.tx.load(request_id, agent_id=agent_id, lock=True)

    def check(self, step: Step) -> Status | None:
        """The status ``step`` leads to, or IllegalTransition (also once a deadline that
        guards its event has passed). Lets a use case refuse before it does costly work."""
        if step.event is None:
            return None
        status = step.snapshot.status
        target = next_status(status, step.event)
        if step.event in _DEADLINE_GUARDED:
            check_deadline(status, step.snapshot.expires_at, self.now)
        return target

    def apply(self, *given: Step) -> list[RequestSnapshot]:
        """Apply ``steps`` (each to a different request); returns the requests after them.
        A step that ends a request also ends its live descendants, in this transaction
        (``_descendants``); those are not among the requests returned."""
        now = self.now
        targets = [self.check(step) for step in given]
        extra = self._descendants(given, targets)
        steps = given + extra
        targets += [self.check(step) for step in extra]
        revoked = self._revoke_ending_sessions(steps)
        after: list[RequestSnapshot] = []
        changes: list[tuple[RequestSnapshot, Mapping[str, Any]]] = []
        for step, target in zip(steps, targets, strict=True):
            values = dict(step.changes)
            if target is not None:
                values["status"] = target
            changes.append((step.snapshot, values))
            new = advance(step.snapshot, values, now)
            credential = new.credential
            if credential is not None and credential.jti in revoked:
                new = dataclasses.replace(
                    new,
                    credential=dataclasses.replace(
                        credential, revoked_at=now, revoke_reason=step.reason or ""
                    ),
                )
            after.append(new)
        self.tx.save(changes, now)
        for step, new in zip(steps, after, strict=True):
            self._write_audit(step, new, revoked)
            self._tell(step, new)
            if new.callback_url is not None and new.status is not step.snapshot.status:
                self.notices.callback(new.id, new.callback_url, new.status.value)
            self.changed[new.id] = new
        return after[: len(given)]

    def _descendants(
        self, steps: Sequence[Step], targets: Sequence[Status | None]
    ) -> tuple[Step, ...]:
        """Ending a request (any step into a final status) ends every live request below it
        (docs/delegation.md): a pending one is cancelled, an approved or active one revoked
        (its credential with it), each with a reason naming the ancestor that ended. Found
        level by level through ``parent_request_id`` (one query per level, whatever the
        number of steps), then locked before they are changed."""
        ending = {
            step.snapshot.id: (step, target)
            for step, target in zip(steps, targets, strict=True)
            if target is not None and target.is_final and not step.snapshot.status.is_final
        }
        if not ending:
            return ()
        known = {step.snapshot.id for step in steps}
        found: list[str] = []
        frontier = list(ending)
        while frontier:  # ends: each request is visited once (``known``)
            children = [c for c in self.tx.live_children(frontier) if c not in known]
            if not children:
                break
            known.update(children)
            found.extend(children)
            frontier = children
        if not found:
            return ()
        loaded = {snap.id: snap for snap in self.tx.load_many(sorted(found), lock=True)}
        extra: list[Step] = []
        for request_id in found:
            snap = loaded.get(request_id)
            if snap is None or snap.status not in _LIVE:
                continue
            ended, status = ending[_ancestor(snap, loaded, ending)]
            reason = f"ancestor request {ended.snapshot.id} ended ({status.value})"
            event = Event.CANCEL if snap.status is Status.PENDING else Event.REVOKE
            extra.append(
                Step(
                    snap,
                    event,
                    ended.actor,
                    {"expires_at": None, "status_reason": reason},
                    reason=reason,
                )
            )
        return tuple(extra)

    # -- the fixed parts of every step ----------------------------------------------------

    def _revoke_ending_sessions(self, steps: Sequence[Step]) -> set[str]:
        """Every exit from ``active`` revokes the credential: the revocation list now, the
        issuer's side queued. Returns the jtis newly revoked."""
        by_reason: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for step in steps:
            snap = step.snapshot
            if (
                step.event in _ENDS_SESSION
                and snap.status is Status.ACTIVE
                and snap.credential is not None
            ):
                by_reason[step.reason or ""].append((snap.id, snap.credential.jti))
        revoked: set[str] = set()
        settled = revocation_is_the_list(self.parts.issuer)
        for reason, credentials in by_reason.items():
            revoked |= self.tx.revoke_credentials(
                credentials, reason=reason, now=self.now, builtin_settled=settled
            )
        if settled:  # recorded as the issuer's side done, in this transaction: no later pass
            for step in steps:
                credential = step.snapshot.credential
                if (
                    credential is not None
                    and credential.jti in revoked
                    and step.snapshot.terms.issuer is None
                ):
                    self.settled_builtin.append((step.snapshot.id, credential.jti))
        self.revoked_at_issuers.extend(
            step.snapshot.credential.jti
            for step in steps
            if step.snapshot.credential is not None
            and step.snapshot.credential.jti in revoked
            and step.snapshot.terms.issuer is not None
        )
        return revoked

    def _write_audit(self, step: Step, new: RequestSnapshot, revoked: set[str]) -> None:
        """The audit entries of a step, in the transaction of its change."""
        audit, now, snap = self.audit, self.now, step.snapshot
        if snap.credential is not None and snap.credential.jti in revoked:
            audit.credential_revoked(
                snap.id, snap.credential.jti, step.actor, step.reason or "", now
            )
            if (snap.id, snap.credential.jti) in self.settled_builtin:
                audit.issuer_revoked(snap.id, snap.credential.jti, 1, now)
        event = step.event
        if event is Event.APPROVE:
            audit.request_approved(snap.id, list(step.detail["approvers"]), now)
        elif event is Event.DENY:
            audit.request_denied(snap.id, step.actor, step.reason or "", now)
        elif event is Event.EXPIRE and snap.status is not Status.ACTIVE:
            audit.request_expired(snap.id, snap.status.value, now)
        elif event is Event.CANCEL:
            audit.request_cancelled(snap.id, step.actor, now, reason=step.reason)
        elif event is Event.CLAIM:
            audit.credential_issued(snap.id, step.actor, dict(step.detail["credential"]), now)
        elif event is Event.COMPLETE:
            audit.session_completed(
                snap.id, step.actor, step.detail["outcome"], step.detail.get("detail", ""), now
            )
        elif event is Event.REVOKE and snap.status is not Status.ACTIVE:
            # An approval revoked before it was claimed; an active one's entry is the
            # credential's revocation above.
            audit.request_revoked(snap.id, step.actor, step.reason or "", now)

    def _fact(self, step: Step, new: RequestSnapshot) -> Fact | None:
        if step.fact is not None:
            return step.fact
        if step.event is None:
            return None
        data: dict[str, Any] = {"was": step.snapshot.status.value, "status": new.status.value}
        data.update(step.detail)
        if step.reason is not None:
            data["reason"] = step.reason
        return Fact(_FACTS[step.event], new.id, self.now, step.actor, data)

    def _tell(self, step: Step, new: RequestSnapshot) -> None:
        """The card refreshed, the fact in its thread, and the sponsor's DM where due."""
        if not new.terms.has_card:
            return
        if step.refresh_card:
            self.notices.refresh_card(new.id)
        fact = self._fact(step, new)
        if fact is None:
            return
        self.notices.thread_note(fact)
        sponsor_hears = step.event in _SPONSOR_HEARS or (
            step.event is Event.EXPIRE and step.snapshot.status is not Status.ACTIVE
        )
        # A sponsor only the agent named (not its workload token) hears of the outcome alone:
        # an agent cannot make stepup message whomever it likes about its requests.
        outcome = new.status.is_final
        if sponsor_hears and new.on_behalf_of and (new.sponsor_verified or outcome):
            self.notices.direct(new.on_behalf_of, fact)


def _ancestor(
    snap: RequestSnapshot, loaded: Mapping[str, RequestSnapshot], ending: Mapping[str, Any]
) -> str:
    """The id of the ending request ``snap`` was found below (its parents are all loaded)."""
    current = snap
    for _ in range(len(loaded) + 1):  # every parent up to the ending one is loaded
        parent = current.parent_request_id
        if parent is None or parent in ending:
            break
        current = loaded[parent]
    return str(current.parent_request_id)


@contextmanager
def changing(parts: Parts, now: datetime) -> Iterator[UnitOfWork]:
    """A unit of work: commits when the block ends (then publishes what changed), rolls back
    on any exception (then nothing is published)."""
    with parts.store.write() as tx:
        unit = UnitOfWork(parts, tx, now)
        yield unit
    parts.feed.publish(unit.changed.values())
    if unit.revoked_at_issuers and parts.revoke_soon is not None:
        parts.revoke_soon(unit.revoked_at_issuers, now)
