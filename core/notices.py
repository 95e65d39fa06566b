"""What people must be told, queued in the outbox in the transaction of the change.

Core says *what* happened and to whom (a ``Fact``); the Slack edge decides the words. Cards
are always rendered from the request's current state at delivery time, so a late delivery is
never stale.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.facts import Fact
from core.store import OutboxSink


class NoticeKind(StrEnum):
    CARD_POST = "card.post"  # post the approval card (channel, and DMs to approvers)
    CARD_REFRESH = "card.refresh"  # update every copy of the card in place
    THREAD_NOTE = "thread.note"  # a fact, told in the card's thread
    DIRECT = "direct"  # a fact, told by DM to a person named by email (the sponsor)
    CHANNEL = "channel"  # a fact (security alerts) or a rendered message (the digest)
    BREAK_GLASS_ALERT = "alert.break_glass"  # security channel, with Acknowledge and Revoke
    DELIVERY_FAILED = "alert.delivery_failed"  # security channel: a message could not be delivered
    CALLBACK = "callback"  # a status change POSTed to the agent's callback_url, signed


SLACK_KINDS = tuple(kind.value for kind in NoticeKind if kind is not NoticeKind.CALLBACK)


class NoSlack:
    """The outbox of an install with no Slack at all (neither a workspace nor the sandbox):
    nothing would ever deliver a Slack notice, so none is written — the backlog stays empty
    instead of growing for ever. Callbacks (``CALLBACK``), delivered by their own worker, still
    go to ``callbacks``. Audit entries and everything else are written as always."""

    def __init__(self, callbacks: OutboxSink | None = None) -> None:
        self._callbacks = callbacks

    def add(
        self, kind: str, request_id: str | None, payload: dict[str, Any], now: datetime
    ) -> None:
        if kind == NoticeKind.CALLBACK.value and self._callbacks is not None:
            self._callbacks.add(kind, request_id, payload, now)


class Notices:
    """Typed front of the outbox, one method per kind of message."""

    def __init__(self, outbox: OutboxSink, now: datetime) -> None:
        self._outbox = outbox
        self._now = now

    def _add(self, kind: NoticeKind, request_id: str | None, payload: dict[str, Any]) -> None:
        self._outbox.add(kind.value, request_id, payload, self._now)

    def post_card(self, request_id: str, channel: str | None, dm_users: list[str]) -> None:
        """The card goes to ``channel`` (its thread carries the events) and to each DM;
        a rule that only DMs approvers has no channel, and the first DM holds the thread."""
        self._add(NoticeKind.CARD_POST, request_id, {"channel": channel, "dm_users": dm_users})

    def refresh_card(self, request_id: str) -> None:
        self._add(NoticeKind.CARD_REFRESH, request_id, {})

    def thread_note(self, fact: Fact) -> None:
        self._add(NoticeKind.THREAD_NOTE, fact.request_id, {"fact": fact.to_json()})

    def direct(self, email: str, fact: Fact) -> None:
        self._add(NoticeKind.DIRECT, fact.request_id, {"email": email, "fact": fact.to_json()})

    def break_glass_alert(self, request_id: str, channel: str) -> None:
        self._add(NoticeKind.BREAK_GLASS_ALERT, request_id, {"channel": channel})

    def alert(self, channel: str, fact: Fact) -> None:
        """A fact for the security channel (a failing or recovered revocation)."""
        self._add(NoticeKind.CHANNEL, fact.request_id, {"channel": channel, "fact": fact.to_json()})

    def channel(self, request_id: str | None, channel: str, text: str, *, blocks: str = "") -> None:
        """A message the edge already rendered (the digest, whose blocks the bot builds)."""
        self._add(
            NoticeKind.CHANNEL, request_id, {"channel": channel, "text": text, "blocks": blocks}
        )

    def callback(self, request_id: str, url: str, status: str) -> None:
        """A status change for the agent's ``url``; the event id is fixed here, so every
        redelivery carries the same one (the receiver de-duplicates on it)."""
        event = {
            "id": "evt_" + uuid.uuid4().hex,
            "request_id": request_id,
            "status": status,
            "at": self._now.isoformat(),
        }
        self._add(NoticeKind.CALLBACK, request_id, {"url": url, "event": event})

    def delivery_failed(
        self, channel: str, *, request_id: str | None, kind: str, error: str, attempts: int
    ) -> None:
        """A message given up on (``kind``, for ``request_id``), told to ``channel``.

        Queued for no request, so it is not held behind that request's other messages.
        """
        self._add(
            NoticeKind.DELIVERY_FAILED,
            None,
            {
                "channel": channel,
                "request_id": request_id,
                "kind": kind,
                "error": error,
                "attempts": attempts,
            },
        )
