"""Scheduler leadership on a real PostgreSQL database: of two contenders exactly one leads; when
it steps down (its process stopping, or its connection lost) the other takes over."""

from __future__ import annotations

import pytest

from core.storage.pg_leader import PgLeadership
from tests.support import eventually


class Heard:
    def __init__(self) -> None:
        self.changes: list[bool] = []

    def __call__(self, leading: bool) -> None:
        self.changes.append(leading)


@pytest.mark.postgres
def test_one_leader_and_a_takeover(postgres_database: str) -> None:
    key = 0x7E57_1EAD  # a lock of the test's own: a running stepup elsewhere is not disturbed
    heard_a, heard_b = Heard(), Heard()
    a = PgLeadership(postgres_database, heard_a, key=key, retry_seconds=0.05)
    b = PgLeadership(postgres_database, heard_b, key=key, retry_seconds=0.05)
    a.start()
    try:
        assert a.leading.wait(10)
        b.start()
        try:
            # b keeps asking (every 50 ms) and keeps being refused while a leads.
            assert not b.leading.wait(0.5) and heard_b.changes == []
            a.stop()
            assert heard_a.changes == [True, False]
            assert b.leading.wait(10) and heard_b.changes == [True]
        finally:
            b.stop()
        assert heard_b.changes == [True, False]
    finally:
        a.stop()


@pytest.mark.postgres
def test_a_leader_whose_connection_breaks_steps_down(postgres_database: str) -> None:
    from sqlalchemy import create_engine, text

    key = 0x7E57_1EAE
    heard = Heard()
    leader = PgLeadership(postgres_database, heard, key=key, retry_seconds=0.05)
    leader.start()
    admin = create_engine(postgres_database, isolation_level="AUTOCOMMIT")
    try:
        assert leader.leading.wait(10)
        with admin.connect() as conn:  # the lock's session is killed, as by a network cut
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objid = :key AND granted"
                ),
                {"key": key},
            )
        eventually(lambda: heard.changes[:2] == [True, False], timeout=10)
        eventually(lambda: heard.changes[2:3] == [True], timeout=10)  # leads again, alone
    finally:
        leader.stop()
        admin.dispose()
