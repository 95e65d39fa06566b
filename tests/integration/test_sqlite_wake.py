"""On SQLite, a change committed by another process (``stepup revoke`` from the CLI) wakes a
parked long-poll through the ``PRAGMA data_version`` watch, not the periodic re-read: the
re-read is pushed out past the poll's whole wait, so only the watch can answer it with the
new status."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bot.api.app import create_app
from bot.api.changes import ChangeHub
from bot.api.context import ApiContext
from bot.server import SQLITE_SAFETY_RECHECK_SECONDS, sqlite_change_watch
from core.agents import AgentRegistry
from core.storage.database import Database
from core.storage.sqlite_changes import SqliteChangeWatch, sqlite_path
from tests.integration.live import LongPollWatch, running
from tests.integration.test_cli_admin import make_cli_env, stepup
from tests.support import OWNER, build_engine, eventually, submit_body

READ = submit_body(
    action="db.query",
    action_class="read",
    target="orders-db",
    environment="staging",
    justification="check",
)
WAIT = 20  # seconds: far past anything the watch needs, short of the safety re-read


def test_another_process_revoking_wakes_the_long_poll(
    db: Database, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = build_engine(db, tmp_path)
    registry = AgentRegistry(engine.service)
    from tests.conftest import T0

    key = registry.add("deploy-bot", OWNER, by="test", now=T0)
    context = ApiContext(service=engine.service, registry=registry)
    watch = sqlite_change_watch(context)
    if not db.is_sqlite:
        assert watch is None  # PostgreSQL has LISTEN/NOTIFY (tests/integration/test_replicas.py)
        return
    assert watch is not None
    assert context.cross_replica_recheck_seconds == SQLITE_SAFETY_RECHECK_SECONDS > WAIT
    parked = LongPollWatch(context, monkeypatch)
    watch.start()
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with (
            running(create_app(context)) as url,
            httpx.Client(base_url=url, headers=headers, timeout=60) as client,
            ThreadPoolExecutor(1) as pool,
        ):
            request = client.post("/v1/requests", json=READ).json()
            assert request["status"] == "approved"
            poll = pool.submit(client.get, f"/v1/requests/{request['id']}", params={"wait": WAIT})
            parked.wait_parked(request["id"])
            stepup(make_cli_env(database_url, tmp_path), "revoke", request["id"])
            answer = poll.result(timeout=WAIT + 10)
        assert answer.json()["status"] == "revoked"
        assert watch.changes_heard >= 1
    finally:
        watch.stop()


class Woken:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.event = threading.Event()

    def __call__(self, request_id: str) -> None:
        self.ids.append(request_id)
        self.event.set()


def _insert(conn: sqlite3.Connection, request_id: str, status: str) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS requests (id TEXT PRIMARY KEY, status TEXT)")
    conn.execute("INSERT INTO requests VALUES (?, ?)", (request_id, status))


def test_the_watch_wakes_only_the_requests_whose_status_changed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "watch.db"
    writer = sqlite3.connect(path, isolation_level=None)  # "another process": its own connection
    writer.execute("PRAGMA journal_mode=WAL")
    _insert(writer, "req_a", "pending")
    _insert(writer, "req_b", "pending")
    hub = ChangeHub()
    woken = Woken()
    watch = SqliteChangeWatch(path, hub.waited, woken, hub.someone_waits, interval=0.01)
    watch.start()
    try:
        assert not hub.someone_waits.is_set()
        hub_events = [hub.register("req_a"), hub.register("req_b")]
        assert hub.someone_waits.is_set()
        # First look: both woken once (a change before the watch looked is not lost).
        _wait_for(lambda: watch.first_looks == 2)
        woken.ids.clear()
        writer.execute("UPDATE requests SET status = 'approved' WHERE id = 'req_b'")
        _wait_for(lambda: woken.ids == ["req_b"])
        assert watch.changes_heard == 1
        writer.execute("INSERT INTO requests VALUES ('req_c', 'pending')")  # no status change
        writer.execute("UPDATE requests SET status = 'denied' WHERE id = 'req_a'")
        _wait_for(lambda: woken.ids == ["req_b", "req_a"])
        hub.unregister("req_a", hub_events[0])
        hub.unregister("req_b", hub_events[1])
        assert not hub.someone_waits.is_set()
    finally:
        watch.stop()
        writer.close()


def _wait_for(check: Callable[[], bool]) -> None:
    eventually(check, timeout=10, interval=0.01)


def test_only_sqlite_files_are_watched() -> None:
    assert sqlite_path("sqlite:////srv/stepup.db") == Path("/srv/stepup.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql+psycopg://u@h/db") is None
