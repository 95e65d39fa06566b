"""Deadlines: expire what is due. Idempotent and safe across replicas.

Due requests are expired in batches: one transaction locks a batch of rows and does to each
exactly what expiring it alone would (same audit entries, notices and compare-and-set), so a
minute in which thousands of credentials fall due costs a few statements per credential
rather than a transaction and a dozen statements each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from core.audit.events import AuditLog
from core.errors import Conflict, IllegalTransition
from core.lifecycle import Event, next_status
from core.model import Status
from core.storage import requests_repo as repo
from core.storage.audit_store import SqlAuditAppender
from core.storage.tables import RequestRow
from core.terms import Terms
from core.usecases.base import StepupBase

REASONS = {
    Status.PENDING: "approval deadline passed",
    Status.APPROVED: "claim window passed",
    Status.ACTIVE: "credential TTL elapsed",
}
NOTES = {
    Status.PENDING: "Expired — no decision",
    Status.APPROVED: "Expired — the credential was not claimed in time",
    Status.ACTIVE: "Credential TTL elapsed — revoked",
}


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    request_id: str
    previous: Status
    status: Status


@dataclass(frozen=True, slots=True)
class _Due:
    row: RequestRow
    status: Status
    new_status: Status


class Expiry(StepupBase):
    """expire_due and expire_one."""

    expiry_batch = 50  # requests per transaction: bounds how long the write lock is held

    def expire_due(self, *, now: datetime, limit: int = 500) -> list[ExpiryResult]:
        """Expire every request whose deadline passed. Idempotent; safe across replicas."""
        with self.db.read() as session:
            due = [request_id for request_id, _ in repo.due_ids(session, now, limit=limit)]
        results = []
        for start in range(0, len(due), self.expiry_batch):
            results.extend(self._expire_batch(due[start : start + self.expiry_batch], now=now))
        return results

    def expire_one(self, request_id: str, *, now: datetime) -> ExpiryResult | None:
        """Expire one request if it is still due; None when another worker got there first."""
        results = self._expire_batch([request_id], now=now)
        return results[0] if results else None

    def _expire_batch(self, request_ids: Sequence[str], *, now: datetime) -> list[ExpiryResult]:
        """Expire those of ``request_ids`` still due, in one transaction, in the given order."""
        try:
            with self.db.write() as session:
                rows = repo.load_rows(session, request_ids, lock=True)
                due = list(_still_due((rows[i] for i in request_ids), now))
                if not due:
                    return []
                self._expire_rows(session, due, now)
                expired = repo.snapshots(session, [d.row for d in due])
        except Conflict:
            if len(request_ids) == 1:
                return []
            # Cannot happen while the rows are locked; should it, settle them one at a time.
            return [r for i in request_ids for r in self._expire_batch([i], now=now)]
        for snapshot in expired:
            self._changed(snapshot)
        return [
            ExpiryResult(s.id, d.status, d.new_status) for s, d in zip(expired, due, strict=True)
        ]

    def _expire_rows(self, session: Session, due: Sequence[_Due], now: datetime) -> None:
        audit = AuditLog(SqlAuditAppender(session))
        revoked = self._revoke_credentials(
            session,
            [d.row for d in due if d.status is Status.ACTIVE],
            reason="ttl elapsed",
            now=now,
        )
        for d in due:
            row = d.row
            if d.status is not Status.ACTIVE:
                audit.request_expired(row.id, d.status.value, now)
            elif row.credential_jti in revoked:
                audit.credential_revoked(
                    row.id, row.credential_jti, "scheduler", "ttl elapsed", now
                )
            # Told before the compare-and-set, which expires the row's loaded attributes.
            self._tell(
                session,
                row,
                Terms.from_json(row.terms),
                now,
                NOTES[d.status],
                sponsor=d.status is not Status.ACTIVE,
            )
        repo.compare_and_set_many(
            session,
            [
                (
                    d.row,
                    {
                        "status": d.new_status.value,
                        "expires_at": None,
                        "status_reason": REASONS[d.status],
                    },
                )
                for d in due
            ],
            now=now,
        )

    def next_deadline(self) -> datetime | None:
        """When the next request falls due (expiry, TTL or escalation), for the timer."""
        with self.db.read() as session:
            return repo.next_deadline(session)


def _still_due(rows: Iterable[RequestRow], now: datetime) -> Iterable[_Due]:
    for row in rows:
        status = Status(row.status)
        deadline = row.credential_expires_at if status is Status.ACTIVE else row.expires_at
        if status.is_final or deadline is None or deadline > now:
            continue
        try:
            new_status = next_status(status, Event.EXPIRE)
        except IllegalTransition:
            continue
        yield _Due(row, status, new_status)
