"""What people must be told, queued in the outbox in the transaction of the change.

Core says *what* happened and to whom; the Slack edge decides how it looks. Cards are always
rendered from the request's current state at delivery time, so a late delivery is never stale.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from core.storage.tables import OutboxRow


class NoticeKind(StrEnum):
    CARD_POST = "card.post"  # post the approval card (channel, and DMs to approvers)
    CARD_REFRESH = "card.refresh"  # update every copy of the card in place
    THREAD_NOTE = "thread.note"  # one line in the card's thread
    DIRECT = "direct"  # a DM to a person named by email (the sponsor)
    CHANNEL = "channel"  # a message to a channel (security alerts)
    BREAK_GLASS_ALERT = "alert.break_glass"  # security channel, with Acknowledge and Revoke


class Notices:
    """Typed front of the outbox, one method per kind of message."""

    def __init__(self, session: Session, now: datetime) -> None:
        self._session = session
        self._now = now

    def _add(self, kind: NoticeKind, request_id: str | None, payload: dict[str, Any]) -> None:
        self._session.add(
            OutboxRow(
                request_id=request_id,
                kind=kind.value,
                payload=json.dumps(payload, sort_keys=True),
                status="pending",
                attempts=0,
                next_attempt_at=self._now,
                created_at=self._now,
            )
        )

    def post_card(self, request_id: str, channel: str | None, dm_users: list[str]) -> None:
        """The card goes to ``channel`` (its thread carries the events) and to each DM;
        a rule that only DMs approvers has no channel, and the first DM holds the thread."""
        self._add(NoticeKind.CARD_POST, request_id, {"channel": channel, "dm_users": dm_users})

    def refresh_card(self, request_id: str) -> None:
        self._add(NoticeKind.CARD_REFRESH, request_id, {})

    def thread_note(self, request_id: str, text: str) -> None:
        self._add(NoticeKind.THREAD_NOTE, request_id, {"text": text})

    def direct(self, request_id: str | None, email: str, text: str) -> None:
        self._add(NoticeKind.DIRECT, request_id, {"email": email, "text": text})

    def break_glass_alert(self, request_id: str, channel: str) -> None:
        self._add(NoticeKind.BREAK_GLASS_ALERT, request_id, {"channel": channel})

    def channel(self, request_id: str | None, channel: str, text: str, *, blocks: str = "") -> None:
        self._add(
            NoticeKind.CHANNEL, request_id, {"channel": channel, "text": text, "blocks": blocks}
        )
