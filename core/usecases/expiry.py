"""Deadlines: expire what is due. Idempotent and safe across replicas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.audit.events import AuditLog
from core.errors import Conflict, IllegalTransition
from core.lifecycle import Event, next_status
from core.model import Status
from core.records import Terms
from core.storage import requests_repo as repo
from core.storage.audit_store import SqlAuditAppender
from core.usecases.base import StepupBase


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    request_id: str
    previous: Status
    status: Status


class Expiry(StepupBase):
    """expire_due and expire_one."""

    def expire_due(self, *, now: datetime, limit: int = 500) -> list[ExpiryResult]:
        """Expire every request whose deadline passed. Idempotent; safe across replicas."""
        with self.db.read() as session:
            due = repo.due_ids(session, now, limit=limit)
        results = []
        for request_id, _ in due:
            result = self.expire_one(request_id, now=now)
            if result is not None:
                results.append(result)
        return results

    def expire_one(self, request_id: str, *, now: datetime) -> ExpiryResult | None:
        """Expire one request if it is still due; None when another worker got there first."""
        try:
            with self.db.write() as session:
                row = repo.load_row(session, request_id, lock=True)
                status = Status(row.status)
                deadline = row.credential_expires_at if status is Status.ACTIVE else row.expires_at
                if status.is_final or deadline is None or deadline > now:
                    return None
                new_status = next_status(status, Event.EXPIRE)
                audit = AuditLog(SqlAuditAppender(session))
                if status is Status.ACTIVE:
                    self._revoke_credential(
                        session, audit, row, by="scheduler", reason="ttl elapsed", now=now
                    )
                    reason = "credential TTL elapsed"
                else:
                    reason = (
                        "approval deadline passed"
                        if status is Status.PENDING
                        else "claim window passed"
                    )
                    audit.request_expired(row.id, status.value, now)
                repo.compare_and_set(
                    session,
                    row,
                    now=now,
                    status=new_status.value,
                    expires_at=None,
                    status_reason=reason,
                )
                note = {
                    Status.PENDING: "Expired — no decision",
                    Status.APPROVED: "Expired — the credential was not claimed in time",
                    Status.ACTIVE: "Credential TTL elapsed — revoked",
                }[status]
                self._tell(
                    session,
                    row,
                    Terms.from_json(row.terms),
                    now,
                    note,
                    sponsor=status is not Status.ACTIVE,
                )
                expired = repo.snapshot(session, row)
        except (Conflict, IllegalTransition):
            return None
        self._changed(expired)
        return ExpiryResult(request_id, status, new_status)
