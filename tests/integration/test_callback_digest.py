"""The daily digest counts the signed callbacks given up on in its window and names the latest
requests (review finding, issue 15): read from the outbox on SQLite and PostgreSQL, rendered
in the Slack digest and its text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.callbacks import CallbackWorker
from bot.slack.digest_blocks import digest_blocks, digest_message
from core.digest import render_text
from core.model import ActionClass
from core.storage.database import Database
from core.storage.digest_repo import read_digest
from tests.integration.test_callback_metrics import closed_port
from tests.support import OWNER, build_engine, intent


def test_callbacks_given_up_on_in_the_window(db: Database, tmp_path: Path) -> None:
    engine = build_engine(db, tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    key = engine.registry.add(
        "hook-bot", OWNER, by="t", now=now - timedelta(days=5), callback_hosts=["127.0.0.1"]
    )
    agent = engine.registry.authenticate(key)
    url = f"http://127.0.0.1:{closed_port()}/hook"

    def give_up(at: datetime, count: int) -> list[str]:
        """``count`` requests whose first callback is given up on at ``at``."""
        ids = []
        for _ in range(count):
            submitted = intent(agent, action_class=ActionClass.READ, callback_url=url)
            ids.append(engine.service.submit(agent, submitted, now=at)[0].id)
        worker = CallbackWorker(engine.service, max_attempts=1, clock=lambda: at)
        try:
            assert worker.run_once() == count
        finally:
            worker.stop()
        return ids

    give_up(now - timedelta(days=2), 2)  # before the window: not counted
    earlier = give_up(now - timedelta(hours=3), 6)
    latest = give_up(now - timedelta(hours=1), 1)
    digest = read_digest(db, engine.keyring, now=now)

    assert digest.callback_dead_letters == 7
    assert digest.callback_dead_requests == (latest[0], *earlier[::-1][:4])
    text = render_text(digest)
    assert f"Signed callbacks: 7 given up on (latest: {latest[0]}, {earlier[-1]}," in text
    shown = [b["text"]["text"] for b in digest_blocks(digest) if "Signed callbacks" in str(b)]
    assert len(shown) == 1 and shown[0].startswith(":warning: *Signed callbacks*: 7 given up on")
    assert f"`{latest[0]}`" in shown[0] and earlier[0] not in shown[0]
    assert "Signed callbacks: 7 given up on" in digest_message(digest)[0]

    quiet = read_digest(db, engine.keyring, now=now + timedelta(days=1))
    assert (quiet.callback_dead_letters, quiet.callback_dead_requests) == (0, ())
    assert "Signed callbacks: none given up on" in render_text(quiet)
