"""The outbox as its delivery worker sees it: take due entries, settle them, and remember
where each card was posted. Safe with several workers and replicas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.storage import outbox_repo, slack_messages_repo
from core.storage.database import Database
from core.storage.outbox_repo import OutboxEntry

__all__ = ["CardLocation", "Outbox", "OutboxEntry"]


@dataclass(frozen=True, slots=True)
class CardLocation:
    channel: str
    ts: str
    primary: bool  # the card whose thread carries the request's events


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    def claim_due(self, now: datetime) -> list[OutboxEntry]:
        """Up to a batch of due entries, each the oldest pending one of its request, leased
        to this worker."""
        with self._db.write() as session:
            return outbox_repo.claim_due(session, now)

    def mark_sent(self, entry_id: int, now: datetime) -> None:
        with self._db.write() as session:
            outbox_repo.mark_sent(session, entry_id, now)

    def reschedule(self, entry_id: int, *, at: datetime, error: str) -> None:
        with self._db.write() as session:
            outbox_repo.reschedule(session, entry_id, at=at, error=error)

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
