"""Replicas on one PostgreSQL database hear each other's request changes (LISTEN/NOTIFY).

Relays on a real PostgreSQL database; then two real runtimes (`build_runtime`, as `stepup
serve` builds them) serving on loopback: a long-poll held by one replica answers as soon as
the other replica commits, not on the periodic re-read (set to 30 s here so it cannot help).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from bot.server import Runtime, build_runtime
from bot.settings import Settings
from core.storage.database import Database
from core.storage.pg_changes import MAX_PAYLOAD_BYTES, PgChangeRelay, conninfo, payloads
from tests.conftest import T0, _reset_postgres
from tests.integration.live import LongPollWatch, running
from tests.support import submit_body

REPO = Path(__file__).resolve().parents[2]


def test_payloads_stay_under_the_limit_and_keep_every_id_in_order() -> None:
    ids = [f"req_{i:032x}" for i in range(1000)]
    chunks = payloads("origin12", ids)
    assert len(chunks) > 1
    assert all(len(chunk.encode()) < MAX_PAYLOAD_BYTES for chunk in chunks)
    assert all(chunk.startswith("origin12:") for chunk in chunks)
    assert [i for chunk in chunks for i in chunk.partition(":")[2].split(",")] == ids
    assert payloads("o", []) == []


def test_conninfo_is_a_libpq_uri() -> None:
    url = "postgresql+psycopg://stepup:s3cret@db.internal:5433/stepup?sslmode=require"
    assert conninfo(url) == "postgresql://stepup:s3cret@db.internal:5433/stepup?sslmode=require"


def change(request_id: str, version: int) -> Any:
    """What a relay reads of a RequestSnapshot: its id and whether it was just created."""
    return SimpleNamespace(id=request_id, just_created=version == 1)


class Heard:
    def __init__(self) -> None:
        self.ids: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.resyncs: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def relay(self, url: str) -> PgChangeRelay:
        return PgChangeRelay(
            url,
            self.ids.put,
            lambda: self.resyncs.put(True),
            poll_seconds=0.2,
            retry_seconds=0.2,
        )

    def next_id(self, timeout: float = 5.0) -> str:
        return self.ids.get(timeout=timeout)


@pytest.fixture
def relays(postgres_database: str) -> Iterator[tuple[PgChangeRelay, Heard, PgChangeRelay, Heard]]:
    heard_a, heard_b = Heard(), Heard()
    a, b = heard_a.relay(postgres_database), heard_b.relay(postgres_database)
    a.start()
    b.start()
    try:
        assert a.listening.wait(10) and b.listening.wait(10)
        yield a, heard_a, b, heard_b
    finally:
        a.stop()
        b.stop()


@pytest.mark.postgres
def test_a_change_published_by_one_replica_reaches_the_other_only(
    relays: tuple[PgChangeRelay, Heard, PgChangeRelay, Heard],
) -> None:
    a, heard_a, b, heard_b = relays
    a.publish(change("req_created", 1))  # just created: nobody can be waiting on it
    a.publish(change("req_1", 2))
    a.publish(change("req_2", 5))
    assert [heard_b.next_id(), heard_b.next_id()] == ["req_1", "req_2"]
    b.publish(change("req_3", 2))
    # PostgreSQL delivers notifications in commit order: had a heard its own req_1 and
    # req_2, they would have come before req_3.
    assert heard_a.next_id() == "req_3"
    # Likewise b's echo of req_3 would come before a later change from a: wait for that one,
    # then nothing else may have been heard (no echo, and no notice of the creation).
    a.publish(change("req_4", 2))
    assert heard_b.next_id() == "req_4"
    assert heard_a.ids.empty() and heard_b.ids.empty()


@pytest.mark.postgres
def test_a_burst_is_carried_whole(
    relays: tuple[PgChangeRelay, Heard, PgChangeRelay, Heard],
) -> None:
    a, _heard_a, _b, heard_b = relays
    ids = [f"req_{i:032x}" for i in range(2000)]
    for request_id in ids:
        a.publish(change(request_id, 2))
    got = {heard_b.next_id() for _ in ids}
    assert got == set(ids)


@pytest.mark.postgres
def test_the_listener_reconnects_and_asks_every_waiter_to_re_read(
    postgres_database: str, relays: tuple[PgChangeRelay, Heard, PgChangeRelay, Heard]
) -> None:
    a, _heard_a, b, heard_b = relays
    admin = create_engine(postgres_database, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN stepup_changes%'"
                )
            ).scalar_one()
    finally:
        admin.dispose()
    assert killed == 2  # both relays' listening sessions
    assert heard_b.resyncs.get(timeout=10)
    assert b.listening.wait(10)
    a.publish(change("req_after", 3))
    assert heard_b.next_id() == "req_after"


def runtime_on(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.chdir(tmp_path)
    for key, value in {
        "STEPUP_DATABASE_URL": url,
        "STEPUP_POLICY_FILE": str(REPO / "manifests" / "policy.example.yaml"),
        "STEPUP_KEYS_DIR": str(tmp_path / "keys"),
        "STEPUP_PUBLIC_URL": "https://stepup.test",
        "STEPUP_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(key, value)
    runtime = build_runtime(Settings())
    runtime.context.cross_replica_recheck_seconds = 30  # so only the relay can wake a poll
    return runtime


@pytest.mark.postgres
def test_a_long_poll_on_one_replica_answers_when_the_other_commits(
    postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reset_postgres(Database(postgres_database))
    first = runtime_on(postgres_database, tmp_path, monkeypatch)
    second = runtime_on(postgres_database, tmp_path, monkeypatch)
    assert first.relay is not None and second.relay is not None
    key = first.context.registry.add("deploy-bot", "owner@example.com", by="test", now=T0)
    pending = submit_body()  # a production restart: pending under the example policy
    watch = LongPollWatch(first.context, monkeypatch)
    with ExitStack() as stack:
        for runtime in (first, second):
            runtime.start()
            stack.callback(runtime.stop)
        url_1 = stack.enter_context(running(first.app))
        url_2 = stack.enter_context(running(second.app))
        assert first.relay.listening.wait(10) and second.relay.listening.wait(10)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(headers=headers, timeout=30) as client:
            req = client.post(f"{url_1}/v1/requests", json=pending).json()
            assert req["status"] == "pending"
            with httpx.Client(headers=headers, timeout=30) as poller:
                answer: dict[str, Any] = {}

                def long_poll() -> None:
                    got = poller.get(f"{url_1}/v1/requests/{req['id']}?wait=20&since=pending")
                    answer["at"], answer["body"] = time.monotonic(), got.json()

                thread = threading.Thread(target=long_poll)
                thread.start()
                watch.wait_parked(req["id"])  # registered and waiting on replica 1
                cancelled = client.post(f"{url_2}/v1/requests/{req['id']}/cancel")
                assert cancelled.status_code == 200, cancelled.text
                committed = time.monotonic()
                thread.join(20)
    assert answer["body"]["status"] == "cancelled"
    assert answer["at"] - committed < 10  # well before the 20 s hold (the re-read: 30 s)
