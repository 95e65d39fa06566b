"""``SlackEmulator``: a real HTTP server answering the Slack Web API methods the bot calls.

    with SlackEmulator() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.api_url)
        client.chat_postMessage(channel="C0APPROVALS", text="hi")
        assert slack.messages("C0APPROVALS")[0].text == "hi"

It keeps the workspace state (messages with their edit history, ephemerals, views), records
every call with the answer it got, and serves faults on demand: rate limits, failures, slow
answers, and a port that stops listening altogether.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from types import TracebackType
from typing import Self

from bot.slack_emulator.call_log import CallLog, CallMatch
from bot.slack_emulator.decode import BadRequestBody, decode_params
from bot.slack_emulator.entities import Call, Ephemeral, Message, User, View
from bot.slack_emulator.faults import Faults
from bot.slack_emulator.http_listener import Listener, Reply, Request
from bot.slack_emulator.identity import DEFAULT_CHANNELS, DEFAULT_USERS, TEAM_ID
from bot.slack_emulator.socket_mode_server import SocketModeServer
from bot.slack_emulator.view_store import ViewStore
from bot.slack_emulator.web_api import RESPONSE_URL_METHOD, WebApi, dispatch
from bot.slack_emulator.workspace import Workspace

RECORDED_HEADERS = ("Authorization", "Content-Type", "User-Agent")


class SlackEmulator:
    """A Slack Web API on ``127.0.0.1``; ``token``/``app_token`` of None accept any
    ``xoxb-``/``xapp-`` token."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        app_token: str | None = None,
        seed: bool = True,
        max_calls: int | None = None,
    ) -> None:
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._workspace = Workspace()
        self._faults = Faults()
        self._log = CallLog(self._cond, max_calls)  # None: every call is kept
        self._listener = Listener(self._answer, host, port)
        self._socket_mode: SocketModeServer | None = None
        self._views = ViewStore()
        self._api = WebApi(
            self._workspace,
            self._views,
            bot_token=token,
            app_token=app_token,
            socket_base=self._socket_base,
        )
        if seed:
            for user in DEFAULT_USERS:
                self.add_user(user.user_id, user.email, real_name=user.real_name)
            for channel_id, name in DEFAULT_CHANNELS:
                self.add_channel(channel_id, name)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        self._closing.clear()
        self._listener.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._listener.stop()
        if self._socket_mode is not None:
            self._socket_mode.close()
            self._socket_mode = None

    @property
    def socket_mode(self) -> SocketModeServer:
        """The Socket Mode endpoint that ``apps.connections.open`` hands out (made on first use)."""
        if self._socket_mode is None:
            self._socket_mode = SocketModeServer(self._listener.host)
        return self._socket_mode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def down(self) -> None:
        """Stop listening: connections are refused until ``up()``."""
        self._listener.stop()

    def up(self) -> None:
        """Listen again on the same port."""
        self._listener.start()

    @property
    def is_up(self) -> bool:
        return self._listener.running

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def url(self) -> str:
        return f"http://{self._listener.host}:{self.port}/"

    @property
    def api_url(self) -> str:
        return f"{self.url}api/"

    def response_url(self) -> str:
        """A fresh ``response_url`` served here; posts to it are recorded as calls named
        ``"response_url"``."""
        return f"{self.url}hooks/{TEAM_ID}/{secrets.token_hex(6)}"

    # -- seed data -------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        email: str,
        *,
        name: str | None = None,
        real_name: str | None = None,
        display_name: str | None = None,
        tz: str = "Europe/London",
        is_bot: bool = False,
        deleted: bool = False,
    ) -> User:
        with self._cond:
            return self._workspace.add_user(
                user_id,
                email,
                name=name,
                real_name=real_name,
                display_name=display_name,
                tz=tz,
                is_bot=is_bot,
                deleted=deleted,
            )

    def add_usergroup(self, group_id: str, user_ids: list[str]) -> None:
        with self._cond:
            self._workspace.usergroups[group_id] = list(user_ids)

    def add_channel(self, channel_id: str, name: str) -> None:
        with self._cond:
            self._workspace.channels[channel_id] = name

    # -- faults ----------------------------------------------------------------------------

    def rate_limit(self, method: str | None, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls answer 429 ``ratelimited`` with ``Retry-After``."""
        with self._cond:
            self._faults.rate_limit(method, times, retry_after)

    def fail(
        self, method: str | None, times: int = 1, error: str = "internal_error", status: int = 500
    ) -> None:
        with self._cond:
            self._faults.fail(method, times, error, status)

    def slow(self, method: str | None, seconds: float) -> None:
        """Answer ``method`` (every method when None) after ``seconds``; 0 turns it off."""
        with self._cond:
            self._faults.slow(method, seconds)

    def reset_faults(self) -> None:
        with self._cond:
            self._faults.reset()

    # -- what happened ---------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """Every call so far (or those to ``method``), oldest first."""
        return self._log.calls(method)

    def clear_calls(self) -> None:
        self._log.clear()

    def wait_for(self, match: CallMatch, timeout: float = 5.0, *, count: int = 1) -> list[Call]:
        """Block until ``count`` calls match (a method name or a predicate); those calls.

        Raises ``TimeoutError`` naming what was seen instead.
        """
        return self._log.wait_for(match, timeout, count)

    def messages(self, channel: str | None = None) -> list[Message]:
        """Messages in post order; ``channel`` may be an id, ``#name`` or a user's id (DM)."""
        with self._cond:
            return self._workspace.ordered_messages(channel)

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Replies in the thread under ``ts`` (without the parent), oldest first."""
        return [m for m in self.messages(channel) if m.thread_ts == ts]

    def message(self, channel: str, ts: str) -> Message:
        for message in self.messages(channel):
            if message.ts == ts:
                return message
        raise LookupError(f"no message {ts} in {channel}")

    def dms(self, user: str) -> list[Message]:
        with self._cond:
            channel = self._workspace.dm_channels.get(user)
        return self.messages(channel) if channel else []

    def ephemerals(self, user: str | None = None) -> list[Ephemeral]:
        with self._cond:
            return [e for e in self._workspace.ephemerals if user is None or e.user == user]

    def views_opened(self) -> list[View]:
        """Modals opened or pushed, oldest first, each as last updated."""
        with self._cond:
            return self._views.modals()

    def view(self, view_id: str) -> View:
        with self._cond:
            return self._views.views[view_id]

    def home(self, user: str) -> View | None:
        with self._cond:
            return self._views.home(user)

    # -- answering -------------------------------------------------------------------------

    def _socket_base(self) -> str:
        return f"ws://{self._listener.host}:{self.socket_mode.port}/"

    def _answer(self, request: Request) -> Reply:
        if request.path.startswith("/hooks/"):
            method = RESPONSE_URL_METHOD
        elif request.path.startswith("/api/"):
            method = request.path.removeprefix("/api/")
        else:
            return Reply(404, b"not found", {"Content-Type": "text/plain"})
        decode_error: str | None = None
        try:
            params = decode_params(
                request.headers.get("Content-Type", ""), request.body, request.query
            )
        except BadRequestBody as exc:
            params, decode_error = {}, str(exc)
        token = _bearer(request.headers.get("Authorization")) or str(params.pop("token", "") or "")
        with self._cond:
            delay = self._faults.delay_for(method)
        if delay:
            self._closing.wait(delay)
        with self._cond:
            status, body, headers = dispatch(
                self._api, self._faults, method, params, token, decode_error
            )
            recorded = {
                h: str(request.headers[h]) for h in RECORDED_HEADERS if h in request.headers
            }
            if method == RESPONSE_URL_METHOD:
                params = {**params, "url": request.path}
            self._log.record(Call(method, params, recorded, time.time(), status, body))
        if method == RESPONSE_URL_METHOD and status == 200:
            return Reply(200, b"ok", {"Content-Type": "text/plain; charset=utf-8"})
        payload = json.dumps(body).encode()
        return Reply(
            status, payload, {"Content-Type": "application/json; charset=utf-8", **headers}
        )


def _bearer(header: str | None) -> str:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return ""
