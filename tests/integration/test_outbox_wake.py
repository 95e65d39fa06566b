"""The delivery workers wake when a commit queued something for them, not at every change."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from core.model import SessionOutcome
from core.storage.database import Database
from tests.support import OWNER, build_engine, intent


def test_outbox_listeners_hear_only_commits_that_queued_something(
    db: Database, tmp_path: Path
) -> None:
    engine = build_engine(db, tmp_path)
    heard: list[frozenset[str]] = []
    engine.service.on_outbox(heard.append)
    now = datetime.now(UTC)
    key = engine.registry.add("deploy-bot", OWNER, by="test", now=now)
    agent = engine.registry.authenticate(key, now=now)

    read = intent(action="db.query", action_class="read", target="orders-db", parameters={})
    allowed, _ = engine.service.submit(agent, read, now=now)  # pre-authorised: no card
    engine.service.claim(allowed.id, agent, now=now)
    engine.service.complete(allowed.id, agent, SessionOutcome.SUCCEEDED, "", now=now)
    assert heard == []  # three commits, nothing for Slack or callbacks: nobody woken

    engine.service.submit(agent, intent(), now=now)  # a production restart: a card to post
    assert len(heard) == 1 and "card.post" in heard[0]


def test_a_failed_transaction_wakes_nobody(db: Database, tmp_path: Path) -> None:
    engine = build_engine(db, tmp_path)
    heard: list[frozenset[str]] = []
    engine.service.on_outbox(heard.append)
    store = engine.service.parts.store
    try:
        with store.write() as tx:
            tx.outbox.add("card.post", None, {}, datetime.now(UTC))
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert heard == []
