"""The scheduler runs an immediate revocation pass only when one has work to do."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.scheduler import DeadlineScheduler
from core.credentials import JwtIssuer
from core.model import SessionOutcome
from core.storage.database import Database
from tests.support import ISSUER, OWNER, build_engine, intent


class CallingIssuer(JwtIssuer):
    """A built-in issuer with work to do when revoking (as a deployment might add)."""

    def revoke(self, handle: str, now: datetime) -> None:
        return None


@pytest.mark.parametrize("issuer", ["builtin", "overridden"])
def test_an_immediate_revocation_pass_only_when_one_has_work(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, issuer: str
) -> None:
    engine = build_engine(db, tmp_path)
    if issuer == "overridden":
        engine.service.parts.issuer = CallingIssuer(engine.keyring, issuer_url=ISSUER)
    scheduler = DeadlineScheduler(engine.service, sweep_interval_seconds=60)
    jobs: list[str] = []
    at = scheduler._at

    def recording(job_id: str, *args: Any, **kwargs: Any) -> None:
        jobs.append(job_id)
        at(job_id, *args, **kwargs)

    monkeypatch.setattr(scheduler, "_at", recording)
    scheduler.start()
    try:
        now = datetime.now(UTC)
        key = engine.registry.add("deploy-bot", OWNER, by="test", now=now)
        agent = engine.registry.authenticate(key, now=now)
        read = intent(action="db.query", action_class="read", target="orders-db")
        request, _ = engine.service.submit(agent, read, now=now)
        engine.service.claim(request.id, agent, now=now)
        engine.service.complete(request.id, agent, SessionOutcome.SUCCEEDED, "", now=now)
    finally:
        scheduler.shutdown()
    # The built-in JWT's revocation was settled in the complete's transaction.
    assert ("revocations-now" in jobs) is (issuer == "overridden")
