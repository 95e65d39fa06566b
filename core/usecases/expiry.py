"""Deadlines: expire what is due. Idempotent and safe across replicas.

Due requests are expired in batches: one unit of work locks a batch of requests and applies
to each exactly the step expiring it alone would, so a minute in which thousands of
credentials fall due costs a few statements per credential rather than a transaction and a
dozen statements each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from core.errors import Conflict, IllegalTransition
from core.lifecycle import Event, next_status
from core.model import Status
from core.snapshots import RequestSnapshot
from core.usecases.parts import Parts
from core.usecases.transition import Step, changing

REASONS = {
    Status.PENDING: "approval deadline passed",
    Status.APPROVED: "claim window passed",
    Status.ACTIVE: "credential TTL elapsed",
}
TTL_REVOKE_REASON = "ttl elapsed"  # the credential's revocation reason


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    request_id: str
    previous: Status
    status: Status


class Expiry:
    expiry_batch = 50  # requests per transaction: bounds how long the write lock is held

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def expire_due(self, *, now: datetime, limit: int = 500) -> list[ExpiryResult]:
        """Expire every request whose deadline passed. Idempotent; safe across replicas."""
        with self.parts.store.read() as tx:
            due = tx.due(now, limit=limit)
        results = []
        for start in range(0, len(due), self.expiry_batch):
            results.extend(self._expire_batch(due[start : start + self.expiry_batch], now=now))
        return results

    def expire_one(self, request_id: str, *, now: datetime) -> ExpiryResult | None:
        """Expire one request if it is still due; None when another worker got there first."""
        results = self._expire_batch([request_id], now=now)
        return results[0] if results else None

    def next_deadline(self) -> datetime | None:
        """When the next request falls due (expiry, TTL or escalation), for the timer."""
        with self.parts.store.read() as tx:
            return tx.next_deadline()

    def _expire_batch(self, request_ids: Sequence[str], *, now: datetime) -> list[ExpiryResult]:
        """Expire those of ``request_ids`` still due, in one transaction, in the given order."""
        try:
            with changing(self.parts, now) as unit:
                due = list(_still_due(unit.tx.load_many(request_ids, lock=True), now))
                if not due:
                    return []
                after = unit.apply(
                    *(
                        Step(
                            snap,
                            Event.EXPIRE,
                            "scheduler",
                            {"expires_at": None, "status_reason": REASONS[snap.status]},
                            reason=TTL_REVOKE_REASON
                            if snap.status is Status.ACTIVE
                            else REASONS[snap.status],
                        )
                        for snap in due
                    )
                )
        except Conflict:
            if len(request_ids) == 1:
                return []
            # Cannot happen while the rows are locked; should it, settle them one at a time.
            return [r for i in request_ids for r in self._expire_batch([i], now=now)]
        return [
            ExpiryResult(new.id, old.status, new.status)
            for old, new in zip(due, after, strict=True)
        ]


def _still_due(snapshots: Iterable[RequestSnapshot], now: datetime) -> Iterable[RequestSnapshot]:
    for snap in snapshots:
        status = snap.status
        deadline = (
            (snap.credential.expires_at if snap.credential else None)
            if status is Status.ACTIVE
            else snap.expires_at
        )
        if status.is_final or deadline is None or deadline > now:
            continue
        try:
            next_status(status, Event.EXPIRE)
        except IllegalTransition:
            continue
        yield snap
