"""The outbox worker: delivers what stepup owes to Slack, in order, and says when it can't.

A transient failure (429, 5xx, Slack's ``internal_error``, a timeout, a refused connection) is
retried with exponential backoff (Slack's ``Retry-After`` on 429 wins, up to the backoff's
cap), at most
``max_attempts`` times. A permanent one (Slack refuses the message, the channel, or the token)
is not retried. Either way the entry is then ``dead``: kept with its error (``stepup requests
show``), counted in ``/metrics``, reported in the security channel, and no longer holding
back its request's later messages. A card or break-glass alert Slack refuses is posted in a
minimal form instead, so the request can still be decided (or the alert acknowledged). A card
goes to several places (a channel, approvers' DMs, the copies a refresh updates): one that
fails does not keep it from the others, and the report names the ones that failed. A crash
between Slack's answer and marking the entry sent can repeat that one message.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.clock import utc_now
from bot.slack.alerts import break_glass_blocks, break_glass_text
from bot.slack.cards import card_blocks, card_text
from bot.slack.delivery_alerts import (
    dead_letter_blocks,
    dead_letter_text,
    minimal_break_glass_blocks,
    minimal_break_glass_text,
    minimal_card_blocks,
    minimal_card_text,
)
from bot.slack.directory import SlackDirectory
from bot.slack.notes import alert_text, note_text, sponsor_text
from core.errors import StepupError
from core.facts import Fact
from core.notices import SLACK_KINDS, NoticeKind
from core.outbox import CardLocation, Outbox, OutboxEntry
from core.service import Stepup
from core.snapshots import RequestSnapshot

logger = logging.getLogger(__name__)


# Slack refuses the message itself: the same payload would be refused again.
CONTENT_ERRORS = frozenset(
    {
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "msg_blocks_too_long",
        "no_text",
        "invalid_arguments",
        "invalid_attachments",
        "too_many_attachments",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "metadata_too_large",
        "markdown_text_conflict",
    }
)
# The conversation or person cannot take the message.
CONVERSATION_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "message_not_found",
        "thread_not_found",
        "cant_update_message",
        "edit_window_closed",
        "user_not_found",
        "users_not_found",
        "user_not_visible",
        "user_disabled",
        "cannot_dm_bot",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "team_not_connected",
        "slack_connect_channel_ref_blocked",
    }
)
# Nothing stepup posts anywhere can succeed until someone fixes the app or its token.
WORKSPACE_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
        "access_denied",
        "ekm_access_denied",
        "enterprise_is_restricted",
        "team_access_not_granted",
        "two_factor_setup_required",
        "org_login_required",
        "app_missing_action_url",
        "invalid_arg_name",
        "invalid_array_arg",
        "invalid_charset",
        "invalid_form_data",
        "invalid_post_type",
        "missing_post_type",
        "unknown_method",
        "deprecated_endpoint",
        "method_deprecated",
    }
)
# Documented as permanent by Slack's method pages; anything else (``ratelimited``,
# ``internal_error``, ``fatal_error``, ``service_unavailable``, ``request_timeout``, an
# unknown code, a 5xx, a timeout, a refused connection) is retried up to the cap.
PERMANENT_ERRORS = CONTENT_ERRORS | CONVERSATION_ERRORS | WORKSPACE_ERRORS


class DeliveryError(Exception):
    """A delivery that failed; ``permanent`` ones are not retried."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        code: str | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code
        self.permanent = permanent

    @classmethod
    def from_slack(cls, exc: SlackApiError, *, note: str = "") -> DeliveryError:
        response = exc.response
        retry_after = response.headers.get("Retry-After") if response is not None else None
        code = _error_code(exc)
        return cls(
            f"Slack said {code}{note}",
            _seconds(retry_after),
            code=code,
            permanent=code in PERMANENT_ERRORS,
        )


def _seconds(header: object) -> float | None:
    """Slack's ``Retry-After`` as seconds, or None when it is missing or no number of them."""
    try:
        seconds = float(str(header)) if header else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _error_code(exc: SlackApiError) -> str:
    error = exc.response.get("error") if exc.response is not None else None
    return str(error or "unknown")


class OutboxWorker:
    def __init__(
        self,
        service: Stepup,
        client: WebClient,
        directory: SlackDirectory,
        *,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 300.0,
        max_attempts: int = 8,
        parallel: int = 4,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.service = service
        self.outbox = Outbox(service.db)
        self.client = client
        self.directory = directory
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_attempts = max_attempts
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="slack-outbox")
        # Copies of the card a card.refresh entry already updated, while it is retried.
        self._refreshed: dict[int, set[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        slack = frozenset(SLACK_KINDS)
        # Woken when a commit queued something for Slack; otherwise its poll finds the rest
        # (other processes' entries, retries falling due).
        self.service.on_outbox(lambda kinds: self._wake.set() if kinds & slack else None)
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
        entries = self.outbox.claim_due(self.clock(), kinds=SLACK_KINDS)
        if not entries:
            return 0
        list(self._pool.map(self._deliver_and_settle, entries))
        return len(entries)

    def _deliver_and_settle(self, entry: OutboxEntry) -> None:
        try:
            self.deliver(entry)
        except Exception as exc:
            failure = exc if isinstance(exc, DeliveryError) else DeliveryError(_describe(exc))
            if failure.permanent:
                self._forget(entry)
                self._give_up(entry, str(failure), failure.code)
            elif entry.attempts >= self.max_attempts:
                self._forget(entry)
                self._give_up(
                    entry, f"{failure} (gave up after {entry.attempts} attempts)", failure.code
                )
            else:
                self._retry(entry, failure)
            return
        self._forget(entry)
        self.outbox.mark_sent(entry.id, self.clock())

    def _forget(self, entry: OutboxEntry) -> None:
        with self._lock:
            self._refreshed.pop(entry.id, None)

    def retry_delay(self, attempts: int, retry_after: float | None) -> float:
        """Seconds until the next attempt: exponential backoff, or Slack's ``Retry-After`` when
        longer, never past ``max_backoff_seconds`` (a hostile or broken answer asking for
        hours would hold the request's later messages that long)."""
        backoff = min(self.max_backoff_seconds, 2.0 ** min(attempts, 16))
        return min(self.max_backoff_seconds, max(retry_after or 0.0, backoff))

    def _retry(self, entry: OutboxEntry, failure: DeliveryError) -> None:
        delay = self.retry_delay(entry.attempts, failure.retry_after)
        logger.warning(
            "Slack delivery of %s for %s failed (attempt %d of %d), retrying in %.0fs: %s",
            entry.kind,
            entry.request_id,
            entry.attempts,
            self.max_attempts,
            delay,
            failure,
        )
        self.outbox.reschedule(
            entry.id, at=self.clock() + timedelta(seconds=delay), error=str(failure)
        )

    def _give_up(self, entry: OutboxEntry, error: str, code: str | None) -> None:
        """Dead-letter ``entry`` and have it reported in the security channel, unless the
        report cannot get there either (then it is logged at ERROR and that is the end)."""
        channel = self.service.security_channel
        why_not = None
        if channel is None:
            why_not = "no security channel is set"
        elif code in WORKSPACE_ERRORS:
            why_not = "Slack refuses the bot itself"
        elif code in CONVERSATION_ERRORS and _channel_of(entry) == channel:
            why_not = "the security channel itself is the problem"
        elif entry.kind == NoticeKind.DELIVERY_FAILED.value:
            why_not = "it was itself such a report"
        reported = self.outbox.mark_dead(
            entry, error=error, now=self.clock(), report_to=None if why_not else channel
        )
        if reported:
            logger.error(
                "Slack delivery of %s for %s given up on after %d attempt(s): %s; "
                "reported in the security channel",
                entry.kind,
                entry.request_id,
                entry.attempts,
                error,
            )
        else:
            logger.error(
                "Slack delivery of %s for %s given up on after %d attempt(s): %s; "
                "not reported in Slack: %s",
                entry.kind,
                entry.request_id,
                entry.attempts,
                error,
                why_not or "it was itself such a report",
            )

    # -- one message -----------------------------------------------------------------------

    def deliver(self, entry: OutboxEntry) -> None:
        payload: dict[str, Any] = json.loads(entry.payload)
        kind = NoticeKind(entry.kind)
        try:
            if kind is NoticeKind.CARD_POST:
                self._post_card(_required(entry.request_id), payload)
            elif kind is NoticeKind.CARD_REFRESH:
                self._refresh_card(_required(entry.request_id), entry.id)
            elif kind is NoticeKind.THREAD_NOTE:
                self._thread_note(_required(entry.request_id), self._words(payload, note_text))
            elif kind is NoticeKind.DIRECT:
                self._direct(
                    entry.request_id, payload["email"], self._words(payload, self._sponsor_words)
                )
            elif kind is NoticeKind.BREAK_GLASS_ALERT:
                self._break_glass_alert(_required(entry.request_id), payload["channel"])
            elif kind is NoticeKind.DELIVERY_FAILED:
                self._delivery_failed(payload)
            elif kind is NoticeKind.CHANNEL:
                blocks = json.loads(payload["blocks"]) if payload.get("blocks") else None
                self.client.chat_postMessage(
                    channel=payload["channel"],
                    text=self._words(payload, alert_text),
                    blocks=blocks,
                    unfurl_links=False,
                    unfurl_media=False,
                )
        except SlackApiError as exc:
            raise DeliveryError.from_slack(exc) from None

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
        """The card in the rule's channel and each approver's DM. One target that fails does
        not keep the card from the others: each is tried, then what failed is reported (or,
        when something may yet succeed, the entry retried for the targets not yet done)."""
        snapshot = self.service.get(request_id)
        done = {m.channel for m in self._messages(request_id)}
        failed = _Failures()
        channel = payload.get("channel")
        if channel and channel not in done:
            try:
                answer = self._post_card_to(channel, snapshot, failed.refused)
            except SlackApiError as exc:
                failed.add(exc, f"the channel {channel}", entry_channel=True)
            else:
                self._remember(request_id, str(answer["channel"]), str(answer["ts"]), primary=True)
                done.add(channel)
        for target in payload.get("dm_users", []):
            user_id = self.directory.user_id_for(target) if "@" in target else target
            if user_id is None:
                logger.warning("no Slack user for an approver of %s; DM skipped", request_id)
                continue
            try:
                dm = str(self.client.conversations_open(users=user_id)["channel"]["id"])
                if dm in done:
                    continue
                answer = self._post_card_to(dm, snapshot, failed.refused)
            except SlackApiError as exc:
                failed.add(exc, f"the DM to {user_id}")
                continue
            self._remember(request_id, dm, str(answer["ts"]), primary=not done)
            done.add(dm)
        failed.raise_if_any(" (a minimal card was posted instead)")

    def _post_card_to(
        self, channel: str, snapshot: RequestSnapshot, refused: list[SlackApiError]
    ) -> Any:
        """Slack's answer to posting the card, or — when Slack refuses the card itself — to
        posting its minimal form; the refusal is added to ``refused``."""
        try:
            return self.client.chat_postMessage(
                channel=channel,
                text=card_text(snapshot),
                blocks=card_blocks(snapshot, self.service.delegating.chain(snapshot)),
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            if _error_code(exc) not in CONTENT_ERRORS:
                raise
            refused.append(exc)
        return self.client.chat_postMessage(
            channel=channel,
            text=minimal_card_text(snapshot),
            blocks=minimal_card_blocks(snapshot),
            unfurl_links=False,
            unfurl_media=False,
        )

    def _refresh_card(self, request_id: str, entry_id: int) -> None:
        """Every copy of the card (the minimal one too) gets the full card, or, when Slack
        refuses that, the minimal form of the request as it now is. A copy that cannot be
        updated (deleted, archived) does not keep the others stale; a retry after a
        transient failure updates only the copies not yet done."""
        snapshot: RequestSnapshot = self.service.get(request_id)
        chain = self.service.delegating.chain(snapshot)  # docs/delegation.md
        blocks, text = card_blocks(snapshot, chain), card_text(snapshot)
        failed = _Failures()
        with self._lock:
            done = self._refreshed.setdefault(entry_id, set())
        for message in self._messages(request_id):
            if (message.channel, message.ts) in done:
                continue
            try:
                try:
                    self.client.chat_update(
                        channel=message.channel,
                        ts=message.ts,
                        text=text,
                        blocks=blocks,
                        unfurl_links=False,
                        unfurl_media=False,
                    )
                except SlackApiError as exc:
                    if _error_code(exc) not in CONTENT_ERRORS:
                        raise
                    failed.refused.append(exc)
                    self.client.chat_update(
                        channel=message.channel,
                        ts=message.ts,
                        text=minimal_card_text(snapshot),
                        blocks=minimal_card_blocks(snapshot),
                        unfurl_links=False,
                        unfurl_media=False,
                    )
            except SlackApiError as exc:
                failed.add(exc, f"the copy in {message.channel}")
                continue
            done.add((message.channel, message.ts))
        failed.raise_if_any(" (the minimal card was updated)")

    def _break_glass_alert(self, request_id: str, channel: str) -> None:
        """The alert, or — when Slack refuses it — its minimal form, so it can still be
        acknowledged and the credential revoked from Slack."""
        snapshot = self.service.get(request_id)
        try:
            self.client.chat_postMessage(
                channel=channel,
                text=break_glass_text(snapshot),
                blocks=break_glass_blocks(snapshot),
                unfurl_links=False,
                unfurl_media=False,
            )
            return
        except SlackApiError as exc:
            if _error_code(exc) not in CONTENT_ERRORS:
                raise
            refused = exc
        self.client.chat_postMessage(
            channel=channel,
            text=minimal_break_glass_text(snapshot),
            blocks=minimal_break_glass_blocks(snapshot),
            unfurl_links=False,
            unfurl_media=False,
        )
        raise DeliveryError.from_slack(refused, note=" (a minimal alert was posted instead)")

    def _thread_note(self, request_id: str, text: str) -> None:
        primary = [m for m in self._messages(request_id) if m.primary]
        if not primary:
            # Entries of a request are delivered in order, so the card.post came first and
            # found no one to post to (say, a DM-only rule whose approvers are not in Slack).
            logger.warning("no card for %s to thread a note under; note dropped", request_id)
            return
        self.client.chat_postMessage(
            channel=primary[0].channel,
            thread_ts=primary[0].ts,
            text=text,
            unfurl_links=False,
            unfurl_media=False,
        )

    def _direct(self, request_id: str | None, email: str, text: str) -> None:
        user_id = self.directory.user_id_for(email)
        if user_id is None:
            # The email is personal data and stays out of the log; the request names it.
            logger.warning("sponsor of %s is no member of the workspace; DM skipped", request_id)
            return
        self.client.chat_postMessage(
            channel=user_id, text=text, unfurl_links=False, unfurl_media=False
        )

    def _delivery_failed(self, payload: dict[str, Any]) -> None:
        snapshot = None
        if payload.get("request_id"):
            try:
                snapshot = self.service.get(str(payload["request_id"]))
            except StepupError:
                snapshot = None
        self.client.chat_postMessage(
            channel=payload["channel"],
            text=dead_letter_text(payload, snapshot),
            blocks=dead_letter_blocks(payload, snapshot),
            unfurl_links=False,
            unfurl_media=False,
        )


class _Failures:
    """What failed while delivering one entry to several targets (channels, DMs, copies)."""

    def __init__(self) -> None:
        self.refused: list[SlackApiError] = []  # refused the full card; minimal one posted
        self.lost: list[tuple[str, str]] = []  # (Slack's error, the target) refused for good
        self.transient: SlackApiError | None = None
        self.channel_code: str | None = None  # the entry's own channel refused it for good

    def add(self, exc: SlackApiError, target: str, *, entry_channel: bool = False) -> None:
        """Note a failure for ``target``; Slack refusing the bot itself ends the delivery
        (no other target can succeed)."""
        code = _error_code(exc)
        if code in WORKSPACE_ERRORS:
            raise DeliveryError.from_slack(exc) from None
        if code not in PERMANENT_ERRORS:
            self.transient = self.transient or exc
            return
        self.lost.append((code, target))
        if entry_channel:
            self.channel_code = code

    def raise_if_any(self, refused_note: str) -> None:
        """Retry when a target may yet succeed; else report what failed for good, naming it."""
        if self.transient is not None:
            raise DeliveryError.from_slack(self.transient)
        words = [f"Slack said {code} for {target}" for code, target in self.lost]
        if self.refused:
            words.append(f"Slack said {_error_code(self.refused[0])}{refused_note}")
        if words:
            # The code decides where the report may go: only the entry's own channel
            # failing can mean the security channel itself is the problem.
            code = self.channel_code if self.lost else _error_code(self.refused[0])
            raise DeliveryError("; ".join(words), code=code, permanent=True)


def _required(request_id: str | None) -> str:
    if request_id is None:
        raise DeliveryError("outbox entry without a request", permanent=True)
    return request_id


def _channel_of(entry: OutboxEntry) -> str | None:
    """The conversation an entry was addressed to, when its payload names one."""
    try:
        channel = json.loads(entry.payload).get("channel")
    except (ValueError, AttributeError):
        return None
    return str(channel) if channel else None


def _describe(exc: Exception) -> str:
    """A failure that is not Slack's answer: a timeout, a refused connection, a bug."""
    return f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
