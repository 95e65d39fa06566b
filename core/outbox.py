"""The outbox as its delivery worker sees it: take due entries, settle them, and remember
where each card was posted. Safe with several workers and replicas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from core.notices import NoticeKind, Notices
from core.storage import outbox_repo, slack_messages_repo
from core.storage.database import Database
from core.storage.outbox_repo import OutboxEntry
from core.storage.sql_store import SqlOutbox

__all__ = ["CardLocation", "Outbox", "OutboxEntry"]


@dataclass(frozen=True, slots=True)
class CardLocation:
    channel: str
    ts: str
    primary: bool  # the card whose thread carries the request's events


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    def claim_due(self, now: datetime, *, kinds: Sequence[str] | None = None) -> list[OutboxEntry]:
        """Up to a batch of due entries (of ``kinds`` when given), each the oldest pending one
        of its request, leased to this worker."""
        with self._db.write() as session:
            return outbox_repo.claim_due(session, now, kinds=kinds)

    def mark_sent(self, entry_id: int, now: datetime) -> None:
        with self._db.write() as session:
            outbox_repo.mark_sent(session, entry_id, now)

    def reschedule(self, entry_id: int, *, at: datetime, error: str) -> None:
        with self._db.write() as session:
            outbox_repo.reschedule(session, entry_id, at=at, error=error)

    def mark_dead(
        self, entry: OutboxEntry, *, error: str, now: datetime, report_to: str | None
    ) -> bool:
        """Give up on ``entry``: it keeps its error, is never retried and no longer holds back
        its request's later entries. In the same transaction, a report of it is queued for
        ``report_to`` — unless the entry is itself such a report (a report of a failed report
        would fail the same way). Returns whether a report was queued."""
        report = report_to is not None and entry.kind != NoticeKind.DELIVERY_FAILED.value
        with self._db.write() as session:
            outbox_repo.mark_dead(session, entry.id, error=error)
            if report and report_to is not None:
                Notices(SqlOutbox(session), now).delivery_failed(
                    report_to,
                    request_id=entry.request_id,
                    kind=entry.kind,
                    error=error,
                    attempts=entry.attempts,
                )
        return report

    def card_locations(self, request_id: str) -> list[CardLocation]:
        with self._db.read() as session:
            return [
                CardLocation(channel, ts, primary)
                for channel, ts, primary in slack_messages_repo.locations(session, request_id)
            ]

    def remember_card(
        self, request_id: str, channel: str, ts: str, *, primary: bool, now: datetime
    ) -> None:
        with self._db.write() as session:
            slack_messages_repo.remember(session, request_id, channel, ts, primary=primary, now=now)
