"""The outbox worker: delivers what stepup owes to Slack, in order, never dropping a message.

A failed delivery is retried with exponential backoff (Slack's ``Retry-After`` on 429 wins);
the error is logged and kept on the entry (``stepup requests show``). A crash between Slack's
answer and marking the entry sent can repeat that one message; nothing is ever lost.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.clock import utc_now
from bot.slack.alerts import break_glass_blocks
from bot.slack.cards import card_blocks, card_text
from bot.slack.directory import SlackDirectory
from bot.slack.notes import alert_text, note_text, sponsor_text
from core.facts import Fact
from core.notices import NoticeKind
from core.outbox import CardLocation, Outbox, OutboxEntry
from core.service import Stepup
from core.snapshots import RequestSnapshot

logger = logging.getLogger(__name__)


class DeliveryError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutboxWorker:
    def __init__(
        self,
        service: Stepup,
        client: WebClient,
        directory: SlackDirectory,
        *,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 300.0,
        parallel: int = 4,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.service = service
        self.outbox = Outbox(service.db)
        self.client = client
        self.directory = directory
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="slack-outbox")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.service.subscribe(lambda _snapshot: self._wake.set())
        self._thread = threading.Thread(target=self._run, name="slack-outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:
                logger.exception("outbox pass failed; retrying")
                busy = False
            if not busy:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    def run_once(self) -> int:
        """Deliver one batch of due entries; returns how many were attempted."""
        entries = self.outbox.claim_due(self.clock())
        if not entries:
            return 0
        list(self._pool.map(self._deliver_and_settle, entries))
        return len(entries)

    def _deliver_and_settle(self, entry: OutboxEntry) -> None:
        try:
            self.deliver(entry)
        except Exception as exc:
            retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
            backoff = min(self.max_backoff_seconds, 2.0 ** min(entry.attempts, 16))
            delay = max(retry_after or 0.0, backoff)
            logger.warning(
                "Slack delivery of %s for %s failed (attempt %d), retrying in %.0fs: %s",
                entry.kind,
                entry.request_id,
                entry.attempts,
                delay,
                exc,
            )
            self.outbox.reschedule(
                entry.id, at=self.clock() + timedelta(seconds=delay), error=str(exc)
            )
            return
        self.outbox.mark_sent(entry.id, self.clock())

    # -- one message -----------------------------------------------------------------------

    def deliver(self, entry: OutboxEntry) -> None:
        payload: dict[str, Any] = json.loads(entry.payload)
        kind = NoticeKind(entry.kind)
        try:
            if kind is NoticeKind.CARD_POST:
                self._post_card(_required(entry.request_id), payload)
            elif kind is NoticeKind.CARD_REFRESH:
                self._refresh_card(_required(entry.request_id))
            elif kind is NoticeKind.THREAD_NOTE:
                self._thread_note(_required(entry.request_id), self._words(payload, note_text))
            elif kind is NoticeKind.DIRECT:
                self._direct(payload["email"], self._words(payload, self._sponsor_words))
            elif kind is NoticeKind.BREAK_GLASS_ALERT:
                snapshot = self.service.get(_required(entry.request_id))
                self.client.chat_postMessage(
                    channel=payload["channel"],
                    text=f"Break-glass used: {snapshot.action} on {snapshot.target}",
                    blocks=break_glass_blocks(snapshot),
                )
            elif kind is NoticeKind.CHANNEL:
                blocks = json.loads(payload["blocks"]) if payload.get("blocks") else None
                self.client.chat_postMessage(
                    channel=payload["channel"],
                    text=self._words(payload, alert_text),
                    blocks=blocks,
                )
        except SlackApiError as exc:
            retry_after = (
                exc.response.headers.get("Retry-After") if exc.response is not None else None
            )
            error = exc.response.get("error") if exc.response is not None else "unknown"
            raise DeliveryError(
                f"Slack said {error}", float(retry_after) if retry_after else None
            ) from None

    @staticmethod
    def _words(payload: dict[str, Any], render: Callable[[Fact], str]) -> str:
        """The text of a notice: its fact in words, or the text queued before facts were."""
        if "fact" in payload:
            return render(Fact.from_json(payload["fact"]))
        return str(payload["text"])

    def _sponsor_words(self, fact: Fact) -> str:
        return sponsor_text(fact, self.service.get(fact.request_id))

    def _messages(self, request_id: str) -> list[CardLocation]:
        return self.outbox.card_locations(request_id)

    def _remember(self, request_id: str, channel: str, ts: str, *, primary: bool) -> None:
        self.outbox.remember_card(request_id, channel, ts, primary=primary, now=self.clock())

    def _post_card(self, request_id: str, payload: dict[str, Any]) -> None:
        snapshot = self.service.get(request_id)
        done = {m.channel for m in self._messages(request_id)}
        blocks, text = card_blocks(snapshot), card_text(snapshot)
        channel = payload.get("channel")
        if channel and channel not in done:
            answer = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
            self._remember(request_id, str(answer["channel"]), str(answer["ts"]), primary=True)
            done.add(channel)
        for target in payload.get("dm_users", []):
            user_id = self.directory.user_id_for(target) if "@" in target else target
            if user_id is None:
                logger.warning("no Slack user for approver %s; DM skipped", target)
                continue
            dm = str(self.client.conversations_open(users=user_id)["channel"]["id"])
            if dm in done:
                continue
            answer = self.client.chat_postMessage(channel=dm, text=text, blocks=blocks)
            self._remember(request_id, dm, str(answer["ts"]), primary=not done)
            done.add(dm)

    def _refresh_card(self, request_id: str) -> None:
        snapshot: RequestSnapshot = self.service.get(request_id)
        blocks, text = card_blocks(snapshot), card_text(snapshot)
        for message in self._messages(request_id):
            self.client.chat_update(
                channel=message.channel, ts=message.ts, text=text, blocks=blocks
            )

    def _thread_note(self, request_id: str, text: str) -> None:
        primary = [m for m in self._messages(request_id) if m.primary]
        if not primary:
            # Entries of a request are delivered in order, so the card.post came first and
            # found no one to post to (say, a DM-only rule whose approvers are not in Slack).
            logger.warning("no card for %s to thread a note under; note dropped", request_id)
            return
        self.client.chat_postMessage(channel=primary[0].channel, thread_ts=primary[0].ts, text=text)

    def _direct(self, email: str, text: str) -> None:
        user_id = self.directory.user_id_for(email)
        if user_id is None:
            logger.warning("no Slack user with the sponsor's email; DM skipped")
            return
        self.client.chat_postMessage(channel=user_id, text=text)


def _required(request_id: str | None) -> str:
    if request_id is None:
        raise DeliveryError("outbox entry without a request")
    return request_id
