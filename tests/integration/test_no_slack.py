"""With Slack neither configured nor sandboxed nothing would ever deliver a Slack message, so
none is queued: the outbox stays empty and its backlog gauge at 0, while the audit log and
everything else are written as always."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.api.metrics import StepupMetrics
from bot.settings import Settings
from bot.wiring import build_service
from core.agents import AgentRegistry
from core.model import ActionClass, Status
from core.storage.database import Database
from core.storage.tables import AuditRow, OutboxRow
from tests.support import TEST_POLICY, intent


def settings_for(database_url: str, tmp_path: Path, **extra: str) -> Settings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(TEST_POLICY)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        STEPUP_DATABASE_URL=database_url,
        STEPUP_KEYS_DIR=str(tmp_path / "keys"),
        STEPUP_POLICY_FILE=str(policy),
        STEPUP_SECURITY_CHANNEL="C0SECURITY",
        **extra,
    )


def count(db: Database, table: type) -> int:
    with db.read() as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def exercise(settings: Settings, db: Database) -> None:
    """A pending request (a card, DMs), then its cancellation; a grant revoked (an alert)."""
    service = build_service(settings, db)
    registry = AgentRegistry(service)
    now = datetime.now(UTC)
    agent = registry.authenticate(registry.add("deploy-bot", "o@example.com", by="t", now=now))
    pending, _ = service.submit(agent, intent(agent), now=now)
    assert pending.status is Status.PENDING
    service.cancel(pending.id, agent, now=now)
    allowed, _ = service.submit(agent, intent(agent, action_class=ActionClass.READ), now=now)
    service.revoke(allowed.id, by="cli", reason="test", now=now)


@pytest.mark.parametrize(
    ("extra", "queued"),
    [
        pytest.param({"STEPUP_SANDBOX": "0"}, False, id="no-slack"),
        pytest.param({}, True, id="sandbox"),
    ],
)
def test_nothing_is_queued_for_slack_when_nothing_delivers_it(
    database_url: str, tmp_path: Path, extra: dict[str, str], queued: bool
) -> None:
    settings = settings_for(database_url, tmp_path, **extra)
    assert settings.slack_delivers is queued
    db = Database(database_url)
    try:
        exercise(settings, db)
        assert count(db, AuditRow) > 0
        assert (count(db, OutboxRow) > 0) is queued
        metrics = StepupMetrics(db, lambda: datetime.now(UTC))
        backlog = metrics.registry.get_sample_value("stepup_outbox_pending")
        assert (backlog == 0) is not queued
    finally:
        db.dispose()
