"""``SignedSlackClient``: what Slack sends to an app's ``/slack/events``, signed as Slack signs it.

Slack signs ``v0:{timestamp}:{raw body}`` with HMAC-SHA256 under the app's signing secret and
sends ``X-Slack-Signature: v0=<hex>`` and ``X-Slack-Request-Timestamp``; apps refuse
timestamps more than five minutes away. ``sign`` is public so tests can forge or age one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import httpx

from bot.slack_emulator import payloads
from bot.slack_emulator.entities import Message
from bot.slack_emulator.identity import TEAM_ID
from bot.slack_emulator.payloads import InputValue, JsonDict

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def signature_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


class SignedSlackClient:
    """Sends Slack's requests to ``events_url``; every sender returns the ``httpx.Response``.

    ``response_urls`` makes the ``response_url`` of clicks and commands (pass
    ``SlackEmulator.response_url`` so replies land in the emulator); ``clock`` gives the time
    used for signatures and timestamps.
    """

    def __init__(
        self,
        events_url: str,
        signing_secret: str,
        *,
        http: httpx.Client | None = None,
        response_urls: Callable[[], str] | None = None,
        verification_token: str = "emulator-verification-token",  # noqa: S107 - not a secret
        user_names: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.events_url = events_url
        self.signing_secret = signing_secret
        self._http = http
        self._owns_http = http is None
        self._response_urls = response_urls or _unreachable_response_url
        self._token = verification_token
        self._user_names = dict(user_names or {})
        self._clock = clock

    @property
    def http(self) -> httpx.Client:
        """The client requests go through (made on first use when none was given)."""
        if self._http is None:
            self._http = httpx.Client(timeout=10.0)
        return self._http

    def close(self) -> None:
        if self._owns_http and self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- signing and sending ---------------------------------------------------------------

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Slack's signature headers for ``body`` (at ``timestamp``, default now)."""
        when = int(self._clock()) if timestamp is None else timestamp
        return signature_headers(self.signing_secret, body, when)

    def post(
        self,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None = None,
        signed: bool = True,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST a raw body, signed unless ``signed`` is False; ``headers`` override last."""
        sent = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        if signed:
            sent.update(self.sign(body, timestamp))
        if retry_num is not None:
            sent["X-Slack-Retry-Num"] = str(retry_num)
            sent["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        sent.update(headers or {})
        return self.http.post(self.events_url, content=body, headers=sent)

    def post_payload(self, payload: Mapping[str, Any], **options: Any) -> httpx.Response:
        """An interaction payload, form-encoded as ``payload=<json>`` like Slack does."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return self.post(body, FORM, **options)

    # -- what users do ---------------------------------------------------------------------

    def click(
        self,
        action_id: str,
        value: str,
        user_id: str,
        *,
        message_ts: str | None = None,
        channel: str | None = None,
        block_id: str | None = None,
        trigger_id: str | None = None,
        response_url: str | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        message: Message | Mapping[str, Any] | None = None,
        view: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        """A button click (block_actions) on a message, or inside ``view`` when given.

        Pass ``message`` (e.g. ``slack.message(channel, ts)``) to send the card as posted:
        its channel, blocks, and the clicked button's block id and text come from it.
        """
        now = self._clock()
        if isinstance(message, Message):
            channel = channel or message.channel
            message = message.as_payload()
        shown: JsonDict | None = None
        if view is None:
            shown = dict(message) if message is not None else None
            if shown is None:
                shown = payloads.placeholder_message(message_ts or f"{now:.6f}")
            elif message_ts is not None:
                shown["ts"] = message_ts
        blocks = (view or shown or {}).get("blocks")
        action = payloads.button_action(action_id, value, block_id, blocks, f"{now:.6f}")
        payload = payloads.block_actions(
            action=action,
            user=self._user(user_id),
            token=self._token,
            trigger_id=trigger_id or payloads.new_trigger_id(),
            response_url=response_url or self._response_urls(),
            channel=channel or "C0APPROVALS",
            message=shown,
            view=dict(view) if view is not None else None,
        )
        return self.post_payload(
            payload, retry_num=retry_num, retry_reason=retry_reason, timestamp=timestamp
        )

    def submit_view(
        self,
        callback_id: str,
        values: Mapping[str, Mapping[str, InputValue]],
        user_id: str,
        *,
        private_metadata: str = "",
        view_id: str | None = None,
        trigger_id: str | None = None,
        title: str = "Stepup",
        retry_num: int | None = None,
        retry_reason: str | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        """A modal submitted; ``values`` is ``{block_id: {action_id: value}}``."""
        payload = payloads.view_submission(
            callback_id=callback_id,
            values=values,
            user=self._user(user_id),
            token=self._token,
            trigger_id=trigger_id or payloads.new_trigger_id(),
            private_metadata=private_metadata,
            view_id=view_id or f"V0{secrets.token_hex(4).upper()}",
            title=title,
        )
        return self.post_payload(
            payload, retry_num=retry_num, retry_reason=retry_reason, timestamp=timestamp
        )

    def slash(
        self,
        command: str,
        text: str,
        user_id: str,
        *,
        channel_id: str = "C0APPROVALS",
        channel_name: str | None = None,
        response_url: str | None = None,
        trigger_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        fields = payloads.slash_command(
            command=command,
            text=text,
            user_id=user_id,
            user_name=self._name(user_id),
            token=self._token,
            channel_id=channel_id,
            channel_name=channel_name or ("directmessage" if channel_id[0] == "D" else "approvals"),
            response_url=response_url or self._response_urls(),
            trigger_id=trigger_id or payloads.new_trigger_id(),
        )
        return self.post(
            urlencode(fields).encode(),
            FORM,
            retry_num=retry_num,
            retry_reason=retry_reason,
            timestamp=timestamp,
        )

    def event(
        self,
        event: Mapping[str, Any],
        *,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        """An Events API ``event_callback`` carrying ``event``."""
        envelope = payloads.event_callback(event, token=self._token, event_time=int(self._clock()))
        body = json.dumps(envelope).encode()
        return self.post(
            body, JSON, retry_num=retry_num, retry_reason=retry_reason, timestamp=timestamp
        )

    def app_home_opened(self, user_id: str, **options: Any) -> httpx.Response:
        event = {
            "type": "app_home_opened",
            "user": user_id,
            "channel": "D" + user_id[1:],
            "tab": "home",
            "event_ts": f"{self._clock():.6f}",
        }
        return self.event(event, **options)

    def url_verification(self, challenge: str) -> httpx.Response:
        body = {"token": self._token, "challenge": challenge, "type": "url_verification"}
        return self.post(json.dumps(body).encode(), JSON)

    def _user(self, user_id: str) -> JsonDict:
        return payloads.user_ref(user_id, self._name(user_id))

    def _name(self, user_id: str) -> str:
        return self._user_names.get(user_id) or user_id.removeprefix("U0").lower()


def _unreachable_response_url() -> str:
    # Shaped like Slack's; nothing answers it from here, so a bot that uses it fails loudly.
    return f"https://hooks.slack.com/actions/{TEAM_ID}/{secrets.randbelow(10**12)}/{secrets.token_hex(12)}"
