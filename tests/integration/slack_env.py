"""A running stepup with Slack enabled, talking to the Slack emulator over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from bot.api.app import create_app
from bot.api.context import ApiContext
from bot.scheduler import DeadlineScheduler
from bot.slack.app import SlackRuntime, build_slack
from bot.slack.events_route import slack_router
from bot.slack_emulator.entities import Message
from bot.slack_emulator.server import SlackEmulator
from bot.slack_emulator.signed_client import SignedSlackClient
from core.agents import AgentRegistry
from core.snapshots import RequestSnapshot
from core.storage.agents_repo import AgentIdentity
from core.storage.database import Database
from core.storage.tables import OutboxRow
from core.usecases.limits import SubmitLimits
from tests.integration.live import running
from tests.support import Engine, build_engine, eventually, intent

SIGNING_SECRET = "8f14e45fceea167a5a36dedd4bea2543"
BOT_TOKEN = "xoxb-1-stepup-test"
OWNER = "olga@example.com"
SPONSOR = "sam@example.com"

SLACK_POLICY = """\
version: 1
defaults: { approval_timeout: 30m, claim_window: 5m, max_ttl: 15m }
approver_groups:
  sre-leads:
    slack_users: [U0ALICE, U0BOB, U0SAM, U0OLGA]
    emails: [carol@example.com]
  oncall:
    slack_usergroup: S0ONCALL
channels:
  approvals: C0APPROVALS
rules:
  - name: prod-destructive
    match: { environment: production, action_class: destructive }
    decision: approve
    tier: high
    approvers: sre-leads
    quorum: 2
    channel: approvals
    notify: [channel, dm]
  - name: prod-write-typed
    match: { environment: production, action_class: write }
    decision: approve
    approvers: [sre-leads, oncall]
    quorum: 1
    channel: approvals
    step_up: true
  - name: staging
    match: { environment: staging }
    decision: approve
    approvers: sre-leads
    quorum: 1
    channel: approvals
  - name: reads
    match: { action_class: read }
    decision: allow
"""


@dataclass
class SlackLive:
    url: str
    engine: Engine
    slack: SlackEmulator
    sim: SignedSlackClient
    runtime: SlackRuntime
    agent: AgentIdentity

    def submit(self, *, when: datetime | None = None, **fields: object) -> RequestSnapshot:
        """Submit the test intent (``tests.support.intent``) with ``fields`` overridden."""
        snapshot, _ = self.engine.service.submit(
            self.agent, intent(self.agent, **fields), now=when or datetime.now(UTC)
        )
        return snapshot

    def outbox_entry(self, request_id: str, kind: str) -> OutboxRow:
        """The one outbox entry of ``kind`` owed for ``request_id``."""
        with self.engine.db.read() as session:
            [found] = session.execute(
                select(OutboxRow).where(OutboxRow.request_id == request_id, OutboxRow.kind == kind)
            ).scalars()
            return found

    def card(self, request_id: str, timeout: float = 10.0) -> Message:
        """The request's card in the approvals channel, once posted."""

        def posted(call: object) -> bool:
            c = call  # a emulator Call
            return (
                getattr(c, "method", "") == "chat.postMessage"
                and getattr(c, "ok", False)
                and c.params.get("channel") == "C0APPROVALS"  # type: ignore[attr-defined]
                and request_id in json.dumps(c.params)  # type: ignore[attr-defined]
                and not c.params.get("thread_ts")  # type: ignore[attr-defined]
            )

        call = self.slack.wait_for(posted, timeout)[0]
        return self.slack.message("C0APPROVALS", str(call.response["ts"]))

    def latest_blocks(self, card: Message) -> str:
        return json.dumps(self.slack.message(card.channel, card.ts).latest.blocks)

    def thread_texts(self, card: Message) -> list[str]:
        return [m.latest.text for m in self.slack.thread(card.channel, card.ts)]

    def eventually(self, check: Callable[[], object], timeout: float = 10.0) -> None:
        eventually(check, timeout=timeout)


@contextmanager
def slack_live(
    db: Database, tmp_path: Path, policy: str = SLACK_POLICY, *, scheduler: bool = False
) -> Iterator[SlackLive]:
    with SlackEmulator() as slack:
        slack.add_usergroup("S0ONCALL", ["U0DAVE"])
        engine = build_engine(db, tmp_path, policy)
        # Slack tests submit bursts of pending requests; the limits per agent have their own
        # tests (tests/integration/test_agent_limits.py).
        engine.service.parts.limits = SubmitLimits(max_pending_per_agent=0, submit_rate_per_agent=0)
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
        context = ApiContext(service=engine.service, registry=registry)
        events = slack_router(runtime.app, signing_secret=SIGNING_SECRET)
        app = create_app(context, extra_routers=[events])
        runtime.start()
        deadlines = (
            DeadlineScheduler(engine.service, sweep_interval_seconds=0.5) if scheduler else None
        )
        if deadlines is not None:
            deadlines.start()
        try:
            with running(app) as url:
                sim = SignedSlackClient(
                    f"{url}/slack/events", SIGNING_SECRET, response_urls=slack.response_url
                )
                yield SlackLive(url, engine, slack, sim, runtime, agent)
                sim.close()
        finally:
            if deadlines is not None:
                deadlines.shutdown()
            runtime.stop()
