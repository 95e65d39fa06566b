"""The outbox gauges tell Slack messages and signed callbacks apart (review finding, issue 15):
a callback owed or given up on is not a Slack message owed or given up on."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from bot.api.metrics import StepupMetrics
from bot.callbacks import CallbackWorker
from core.model import ActionClass
from core.storage.database import Database
from core.storage.tables import OutboxRow
from tests.support import OWNER, build_engine, intent


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def owed(db: Database, *, callbacks: bool, status: str = "pending") -> int:
    is_callback = OutboxRow.kind == "callback"
    with db.read() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(OutboxRow)
                .where(OutboxRow.status == status, is_callback if callbacks else ~is_callback)
            ).scalar_one()
        )


def test_callbacks_have_their_own_gauges(db: Database, tmp_path: Path) -> None:
    engine = build_engine(db, tmp_path)
    now = datetime.now(UTC)
    key = engine.registry.add("hook-bot", OWNER, by="t", now=now, callback_hosts=["127.0.0.1"])
    agent = engine.registry.authenticate(key)
    url = f"http://127.0.0.1:{closed_port()}/hook"
    for action_class in (ActionClass.READ, ActionClass.DESTRUCTIVE):
        submitted = intent(agent, action_class=action_class, callback_url=url)
        engine.service.submit(agent, submitted, now=now)
    metrics = StepupMetrics(db, lambda: datetime.now(UTC))

    def gauge(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    assert owed(db, callbacks=True) == 2
    assert gauge("stepup_callbacks_pending") == 2
    assert gauge("stepup_outbox_pending") == owed(db, callbacks=False)  # the cards alone
    assert (gauge("stepup_callbacks_oldest_pending_seconds") or 0) >= 0

    worker = CallbackWorker(engine.service, max_attempts=1)
    try:
        assert worker.run_once() == 2  # refused connections: given up on at once
    finally:
        worker.stop()
    assert owed(db, callbacks=True, status="dead") == 2
    assert gauge("stepup_callback_dead_letters") == 2
    assert gauge("stepup_slack_dead_letters") == 0
    assert gauge("stepup_callbacks_pending") == 0
    assert gauge("stepup_callbacks_oldest_pending_seconds") == 0
    assert gauge("stepup_outbox_pending") == owed(db, callbacks=False)
