"""``/slack/events`` refuses every malformed request over real HTTP with 400, 401 or 413 (never
500), records nothing, logs no traceback and never logs the body, at any level, Bolt's own
logging included. The body of each request carries a secret marker (in its ``response_url``)
that must appear in no log record."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from sqlalchemy import func, select

from bot.slack.app import build_slack
from bot.slack.cards import APPROVE
from bot.slack_emulator import payloads
from bot.slack_emulator.server import SlackEmulator
from bot.slack_emulator.signed_client import FORM, JSON, signature_headers
from core.agents import AgentRegistry
from core.model import Status
from core.storage.database import Database
from core.storage.tables import AuditRow, OutboxRow, VoteRow
from tests.integration.live import free_port
from tests.integration.slack_env import (
    BOT_TOKEN,
    OWNER,
    SIGNING_SECRET,
    SLACK_POLICY,
    SlackLive,
    slack_live,
)
from tests.integration.test_serve import env_for, serving
from tests.support import build_engine, eventually, intent

MARKER = f"secret-{secrets.token_hex(8)}"
RESPONSE_URL = f"https://hooks.slack.com/actions/T0EMULATOR/1/{MARKER}"


@pytest.fixture
def live(db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[SlackLive]:
    caplog.set_level(logging.DEBUG)  # before Bolt makes its loggers: they copy the root's level
    with slack_live(db, tmp_path) as env:
        yield env


def click_body(request_id: str, user: str = "U0ALICE") -> bytes:
    """Alice approving: on the staging rule (quorum 1) one such click approves the request."""
    payload = payloads.block_actions(
        action=payloads.button_action(APPROVE, request_id, None, None, f"{time.time():.6f}"),
        user=payloads.user_ref(user, user.lower()),
        token="emulator-verification-token",
        trigger_id=payloads.new_trigger_id(),
        response_url=RESPONSE_URL,
        channel="C0APPROVALS",
        message=payloads.placeholder_message(f"{time.time():.6f}"),
        view=None,
    )
    return urlencode({"payload": json.dumps(payload)}).encode()


@dataclass(frozen=True)
class Case:
    status: int
    # (the click's body) -> (the body sent, its headers)
    build: Callable[[bytes], tuple[bytes, dict[str, str]]]


def signed(
    body: bytes, content_type: str | None = FORM, *, when: str | None = None
) -> tuple[bytes, dict[str, str]]:
    stamp = when if when is not None else str(int(time.time()))
    base = b"v0:" + stamp.encode() + b":" + body
    digest = hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()
    headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return body, headers


def without(name: str) -> Callable[[bytes], tuple[bytes, dict[str, str]]]:
    def build(body: bytes) -> tuple[bytes, dict[str, str]]:
        sent, headers = signed(body)
        del headers[name]
        return sent, headers

    return build


def wrong_signature(body: bytes) -> tuple[bytes, dict[str, str]]:
    headers = signature_headers("not-the-secret", body, int(time.time()))
    return body, headers | {"Content-Type": FORM}


CASES = {
    "no timestamp": Case(401, without("X-Slack-Request-Timestamp")),
    "non-numeric timestamp": Case(401, lambda b: signed(b, when="soon")),
    "timestamp too long for int()": Case(401, lambda b: signed(b, when="9" * 5000)),
    "stale timestamp": Case(401, lambda b: signed(b, when=str(int(time.time()) - 6 * 60))),
    "no signature": Case(401, without("X-Slack-Signature")),
    "wrong signature": Case(401, wrong_signature),
    "body not UTF-8": Case(400, lambda b: signed(b + b"&x=%FF\xff\xfe")),
    "no content type": Case(400, lambda b: signed(b, None)),
    "JSON that is no object": Case(400, lambda b: signed(b'["' + b + b'"]', JSON)),
    "oversize body": Case(413, lambda b: signed(b + b"&pad=" + b"x" * (1024 * 1024))),
}


def counts(live: SlackLive) -> tuple[int, int, int]:
    with live.engine.db.read() as session:
        return tuple(  # type: ignore[return-value]
            int(session.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (VoteRow, AuditRow, OutboxRow)
        )


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )


@pytest.mark.parametrize("name", list(CASES))
def test_a_malformed_request_is_refused_and_leaves_no_trace(
    live: SlackLive, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    case = CASES[name]
    req = live.submit(environment="staging", action_class="write")
    live.card(req.id)
    before = counts(live)
    body, headers = case.build(click_body(req.id))
    with httpx.Client(timeout=30) as http:
        answer = http.post(live.sim.events_url, content=body, headers=headers)
    assert answer.status_code == case.status, answer.text
    assert MARKER not in answer.text
    # A genuine command sent after it: once its answer is posted, the refused request would
    # have been handled too, had it been dispatched.
    live.sim.slash("/stepup", "help", "U0ALICE")
    live.slack.wait_for(
        lambda c: c.method == "chat.postEphemeral" and c.params.get("user") == "U0ALICE"
    )
    assert counts(live) == before
    assert live.engine.service.get(req.id).status is Status.PENDING
    assert [e.user for e in live.slack.ephemerals()] == ["U0ALICE"]
    assert MARKER not in logged(caplog)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_large_genuine_request_is_still_handled(
    live: SlackLive, caplog: pytest.LogCaptureFixture
) -> None:
    """A click carries the whole card or modal, form-encoded: well over the API's 64 KiB."""
    req = live.submit(environment="staging", action_class="write")
    live.card(req.id)
    body, headers = signed(click_body(req.id) + b"&pad=" + b"x" * (200 * 1024))
    with httpx.Client(timeout=30) as http:
        assert http.post(live.sim.events_url, content=body, headers=headers).status_code == 200
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)
    assert MARKER not in logged(caplog)


def test_serve_logs_no_body_at_debug(tmp_path: Path) -> None:
    """The real process, at DEBUG, with Slack in HTTP mode: its output never shows the body."""
    port = free_port()
    with SlackEmulator() as slack:
        env = env_for(
            tmp_path,
            port,
            STEPUP_LOG_LEVEL="DEBUG",
            SLACK_BOT_TOKEN="xoxb-1-0123456789",
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            STEPUP_SLACK_API_URL=slack.api_url,
        )
        with serving(tmp_path, env) as proc:
            url = f"http://127.0.0.1:{port}/slack/events"
            body = click_body("req_0000000000000000000000")
            with httpx.Client(timeout=30) as http:
                for build in (wrong_signature, CASES["body not UTF-8"].build):
                    sent, headers = build(body)
                    assert http.post(url, content=sent, headers=headers).status_code in (400, 401)
            proc.send_signal(signal.SIGTERM)
            output = proc.stdout.read() if proc.stdout else ""
            proc.wait(timeout=10)
    assert "listening on" in output  # the output was captured at all
    assert "DEBUG" in output  # and at DEBUG
    assert MARKER not in output
    assert "Traceback" not in output


def test_socket_mode_logs_no_body_at_debug(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """slack-sdk's Socket Mode client logs every envelope at DEBUG; through Bolt's logger the
    envelope's body is withheld and the click still counts."""
    caplog.set_level(logging.DEBUG)
    with SlackEmulator() as slack:
        engine = build_engine(db, tmp_path, SLACK_POLICY)
        registry = AgentRegistry(engine.service)
        agent = registry.authenticate(
            registry.add("deploy-bot", OWNER, by="test", now=datetime.now(UTC))
        )
        runtime = build_slack(
            engine.service,
            bot_token=BOT_TOKEN,
            signing_secret=SIGNING_SECRET,
            api_url=slack.api_url,
            outbox_poll_seconds=0.1,
        )
        handler = SocketModeHandler(runtime.app, "xapp-1-A0STEPUP-1-0123456789abcdef")
        runtime.start()
        handler.connect()
        try:
            slack.socket_mode.wait_connected(timeout=10)
            staging = intent(agent, environment="staging", action_class="write")
            request, _ = engine.service.submit(agent, staging, now=datetime.now(UTC))
            click = json.loads(parse_qs(click_body(request.id).decode())["payload"][0])
            envelope = slack.socket_mode.push("interactive", click)
            slack.socket_mode.wait_ack(envelope, timeout=5)
            eventually(lambda: engine.service.get(request.id).status is Status.APPROVED)
        finally:
            handler.close()
            runtime.stop()
    assert MARKER not in logged(caplog)
    assert "on_message invoked (body withheld)" in logged(caplog)  # the envelope was logged
