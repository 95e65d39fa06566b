"""Socket Mode for real: slack-sdk's client connects to the emulator's WebSocket endpoint,
receives a click as an envelope, acknowledges it, and the approval is recorded."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from slack_bolt.adapter.socket_mode import SocketModeHandler

from bot.slack.app import build_slack
from bot.slack.cards import APPROVE
from bot.slack_emulator import payloads
from bot.slack_emulator.server import SlackEmulator
from core.agents import AgentRegistry
from core.model import Status
from core.storage.database import Database
from tests.integration.slack_env import BOT_TOKEN, OWNER, SIGNING_SECRET, SLACK_POLICY
from tests.support import build_engine, eventually, intent


def test_a_click_arrives_over_socket_mode_and_is_recorded(db: Database, tmp_path: Path) -> None:
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
            outbox_max_backoff_seconds=1.0,
        )
        handler = SocketModeHandler(runtime.app, "xapp-1-A0STEPUP-1-0123456789abcdef")
        runtime.start()
        handler.connect()
        try:
            slack.socket_mode.wait_connected(timeout=10)
            migration = intent(
                agent,
                action="db.migrate",
                target="orders-db",
                environment="staging",
                justification="migration 42",
            )
            request, _ = engine.service.submit(agent, migration, now=datetime.now(UTC))
            assert request.status is Status.PENDING
            click = payloads.block_actions(
                action=payloads.button_action(
                    APPROVE, request.id, "decision", None, f"{time.time():.6f}"
                ),
                user=payloads.user_ref("U0ALICE", "alice"),
                token="emulator-verification-token",
                trigger_id=payloads.new_trigger_id(),
                response_url=None,
                channel="C0APPROVALS",
                message=payloads.placeholder_message(f"{time.time():.6f}"),
                view=None,
            )
            envelope = slack.socket_mode.push("interactive", click)
            slack.socket_mode.wait_ack(envelope, timeout=5)  # acknowledged within Slack's 3 s
            approved = eventually(
                lambda: engine.service.get(request.id),
                until=lambda snapshot: snapshot.status is Status.APPROVED,
                message="the click was not recorded",
            )
            assert [v.email for v in approved.approvals] == ["alice@example.com"]
            assert slack.calls("apps.connections.open")[0].ok
        finally:
            handler.close()
            runtime.stop()
