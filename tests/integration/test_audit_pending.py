"""Audit entries off the hot path (issue 16 item 3, docs/audit.md "Pending entries").

On PostgreSQL a state change writes its entries unchained into ``audit_pending``; a chain
pass moves them into the hash chain in id order. Verification counts pending entries as
pending, never as verified; tampering with chained entries is still named; the fence keeps
a chain pass from overtaking a transaction still in flight; one replica leads the chaining.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, func, insert, select, text

from bot.scheduler import DeadlineScheduler
from core.audit.chain import GENESIS_HASH
from core.audit.checkpoints import CheckpointSchedule
from core.audit.events import AuditKind
from core.digest.text import audit_line
from core.errors import AuditChainBroken
from core.model import Approver, SessionOutcome, Status, Vote
from core.storage.audit_chainer import BackgroundChainer, chain_pending
from core.storage.audit_store import (
    AUDIT_PENDING,
    CHAINER_KEY,
    PENDING_FENCE,
    SqlAuditAppender,
    chain_rows,
    iter_entries,
    read_head,
    sign_checkpoints,
)
from core.storage.audit_verify import verify_database
from core.storage.database import Database
from core.storage.digest_repo import build_digest
from core.storage.migrate import alembic_config, upgrade
from core.storage.requests_repo import logged_terms
from core.storage.tables import AuditPendingRow, AuditRow
from core.terms import Terms
from tests.conftest import T0
from tests.integration import test_cli
from tests.integration.test_cli import Cli
from tests.support import OWNER, Engine, build_engine, eventually, intent

cli, cli_db = test_cli.cli, test_cli.cli_db  # the CLI's fixtures: STEPUP_* only, scratch cwd
postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


class Wakes:
    """Stands in for a background chainer that has not run yet: counts the wake-ups."""

    def __init__(self) -> None:
        self.count = 0

    def wake(self) -> None:
        self.count += 1


def defer_chaining(db: Database) -> Wakes:
    wakes = Wakes()
    db.write_session_info[CHAINER_KEY] = wakes
    return wakes


def traffic(engine: Engine) -> str:
    """A request approved by two signed votes, claimed and completed; its id."""
    svc = engine.service
    agent = engine.registry.authenticate(engine.registry.add("deploy-bot", OWNER, by="t", now=T0))
    snap, _ = svc.submit(agent, intent(agent), now=T0)
    for i, who in enumerate(["U0ALICE", "U0BOB"], start=1):
        approver = Approver(who, f"{who[3:].lower()}@example.com")
        svc.vote(snap.id, approver, Vote.APPROVE, now=T0 + timedelta(seconds=i))
    svc.claim(snap.id, agent, now=T0 + timedelta(seconds=5))
    svc.complete(snap.id, agent, SessionOutcome.SUCCEEDED, "ok", now=T0 + timedelta(seconds=9))
    return snap.id


def pending_rows(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as session:
        return [
            tuple(row)
            for row in session.execute(
                select(
                    AuditPendingRow.kind,
                    AuditPendingRow.request_id,
                    AuditPendingRow.actor,
                    AuditPendingRow.data,
                ).order_by(AuditPendingRow.id)
            )
        ]


def chained_rows(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as session:
        return [(e.kind, e.request_id, e.actor, e.data) for e in iter_entries(session)]


def insert_pending(db: Database, **fields: Any) -> None:
    """What an insider with write access to the database can do: a row of their own."""
    row = {"at": T0, "request_id": None, "actor": "mallory", "data": "{}"} | fields
    with db.engine.begin() as conn:
        conn.execute(insert(AUDIT_PENDING), [row])


# -- writing and chaining -----------------------------------------------------------------------


@postgres_only
def test_postgres_writes_entries_unchained_and_a_pass_chains_them_in_order(
    db: Database, tmp_path: Path
) -> None:
    engine = build_engine(db, tmp_path)
    wakes = defer_chaining(db)
    request_id = traffic(engine)
    written = pending_rows(db)
    assert [kind for kind, *_ in written][:2] == ["agent.added", "intent.submitted"]
    assert "session.completed" in [kind for kind, *_ in written]
    assert wakes.count >= 5  # every writing commit woke the chainer
    assert chained_rows(db) == []
    with db.read() as session:
        assert read_head(session) == (0, GENESIS_HASH)  # nobody touched the head

    report = verify_database(db, engine.keyring)
    assert (report.chain.entries, report.pending.count) == (0, len(written))
    assert report.pending.oldest_at == T0
    assert (report.requests.requests, report.requests.pending) == (0, 1)  # not compared
    assert report.requests.ok

    assert chain_pending(db.engine) == len(written)
    assert pending_rows(db) == []
    assert chained_rows(db) == written  # id order is chain order
    report = verify_database(db, engine.keyring)
    assert (report.chain.entries, report.pending.count) == (len(written), 0)
    assert (report.requests.requests, report.requests.pending, report.requests.ok) == (1, 0, True)
    assert engine.service.get(request_id).status is Status.COMPLETED
    assert chain_pending(db.engine) == 0  # nothing left: a no-op


def test_without_a_background_chainer_entries_are_chained_when_the_write_returns(
    db: Database, tmp_path: Path
) -> None:
    """SQLite chains in the transaction; PostgreSQL right after the commit, in the same
    thread: what the CLI and a process without ``stepup serve``'s chainer rely on."""
    engine = build_engine(db, tmp_path)
    traffic(engine)
    assert pending_rows(db) == []
    report = verify_database(db, engine.keyring)
    assert report.chain.entries == len(chained_rows(db)) > 5
    assert (report.pending.count, report.requests.requests, report.requests.ok) == (0, 1, True)


@postgres_only
def test_an_entry_being_chained_is_read_back_in_one_place_or_the_other(
    db: Database, tmp_path: Path
) -> None:
    """The service reads a request's decided terms back before an issuer mints (CI caught a
    claim refused as 'stored terms differ'): a chain pass that commits while that read runs
    moves the entry from audit_pending to audit_log; under READ COMMITTED, one statement per
    table could look in the log before the move and in the pending table after it, and find
    the entry in neither. Here the pass commits right after the read's first statement."""
    engine = build_engine(db, tmp_path)
    defer_chaining(db)
    agent = engine.registry.authenticate(engine.registry.add("deploy-bot", OWNER, by="t", now=T0))
    snap, _ = engine.service.submit(agent, intent(agent), now=T0)
    assert any(kind == "policy.decided" for kind, *_ in pending_rows(db))
    moved: list[int] = []

    with db.read() as session:
        reading = session.connection()

        def chain_once(conn: Any, *_: Any) -> None:
            if conn is reading and not moved:
                moved.append(chain_pending(db.engine))

        event.listen(db.engine, "after_cursor_execute", chain_once)
        try:
            terms = logged_terms(session, snap.id)
        finally:
            event.remove(db.engine, "after_cursor_execute", chain_once)
    assert moved and moved[0] > 0  # the pass did run in the middle of the read
    assert terms is not None and Terms.from_json(json.dumps(terms)) == snap.terms


@postgres_only
def test_a_pass_signs_the_every_nth_checkpoint(db: Database, tmp_path: Path) -> None:
    engine = build_engine(db, tmp_path)
    sign_checkpoints(db, CheckpointSchedule(engine.keyring, 4))
    defer_chaining(db)
    traffic(engine)
    written = len(pending_rows(db))
    chain_pending(db.engine, schedule=CheckpointSchedule(engine.keyring, 4))
    kinds = [kind for kind, *_ in chained_rows(db)]
    assert kinds[-1] == AuditKind.AUDIT_CHECKPOINT.value
    assert len(kinds) == written + 1  # one checkpoint after the batch that passed 4, 8...
    report = verify_database(db, engine.keyring)
    assert (report.anchoring.checkpoints, report.anchoring.unanchored) == (1, 0)


@postgres_only
def test_a_pass_does_not_chain_past_a_transaction_still_in_flight(db: Database) -> None:
    """Transaction A takes id 1 and has not committed when B (id 2) commits. A pass that
    started then must wait for A and chain 1 before 2 (without the fence it chained 2 and
    left 1 to land after it)."""
    defer_chaining(db)
    inserted, release = threading.Event(), threading.Event()

    def append(session: Any, actor: str) -> None:
        SqlAuditAppender(session).append(
            AuditKind.AGENT_ADDED, at=T0, request_id=None, actor=actor, data={"who": actor}
        )

    def slow_writer() -> None:
        with db.write() as session:
            append(session, "first")

            def hold(_session: Any) -> None:  # runs after the entries are inserted
                inserted.set()
                release.wait(30)

            event.listen(session, "before_commit", hold)

    a = threading.Thread(target=slow_writer)
    a.start()
    assert inserted.wait(30)
    with db.write() as session:  # B: commits while A is in flight
        append(session, "second")
    chained: list[int] = []
    chainer = threading.Thread(target=lambda: chained.append(chain_pending(db.engine)))
    chainer.start()

    def waiting_on_the_fence() -> bool:
        with db.engine.connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                        " AND objid = :key AND database = (SELECT oid FROM pg_database"
                        " WHERE datname = current_database())"
                    ),
                    {"key": PENDING_FENCE},
                ).scalar_one()
            )

    eventually(waiting_on_the_fence, message="the chain pass did not wait for the writer")
    assert chained_rows(db) == []
    release.set()
    a.join(30)
    chainer.join(30)
    assert chained == [2]
    assert [actor for _, _, actor, _ in chained_rows(db)] == ["first", "second"]


# -- verification ---------------------------------------------------------------------------------


def test_verify_counts_pending_entries_and_never_as_verified(db: Database, tmp_path: Path) -> None:
    """An entry that is not chained proves nothing: counted apart, its request not compared;
    and a chained entry changed meanwhile is still named."""
    engine = build_engine(db, tmp_path)
    request_id = traffic(engine)
    entries = len(chained_rows(db))
    insert_pending(db, kind="request.revoked", request_id=request_id, data='{"reason":"x"}')
    report = verify_database(db, engine.keyring)
    assert (report.chain.entries, report.pending.count) == (entries, 1)
    assert (report.requests.requests, report.requests.pending) == (0, 1)

    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3"))
    with pytest.raises(AuditChainBroken) as broken:
        verify_database(db, engine.keyring)
    assert broken.value.seq == 3


def test_the_digest_shows_entries_waiting_and_raises_the_alarm_once_they_are_stale(
    db: Database, tmp_path: Path
) -> None:
    """A stopped chainer (or a row put in the pending table by hand) leaves entries verified
    by nothing: the digest counts them, and past a minute says so as loudly as a broken
    chain; once chained, they are gone from it."""
    engine = build_engine(db, tmp_path)
    traffic(engine)
    at = T0 + timedelta(minutes=1)
    insert_pending(db, kind="request.revoked", at=at)
    insert_pending(db, kind="request.revoked", at=at + timedelta(seconds=20))
    with db.read() as session:
        fresh = build_digest(session, engine.keyring, now=at + timedelta(seconds=30)).audit
        stale = build_digest(session, engine.keyring, now=at + timedelta(minutes=5)).audit
    assert (fresh.pending, fresh.oldest_pending_at, fresh.pending_stale) == (2, at, False)
    assert fresh.ok and fresh.healthy
    assert (stale.pending, stale.pending_stale) == (2, True)
    assert stale.ok and not stale.healthy  # the chain itself is intact; the log is not checked
    assert "NOT CHAINED: 2 entries waiting since" in audit_line(stale)
    assert chain_pending(db.engine) == 2
    with db.read() as session:
        chained = build_digest(session, engine.keyring, now=at + timedelta(minutes=5)).audit
    assert (chained.pending, chained.pending_stale) == (0, False)


def test_a_forged_pending_entry_is_caught_once_chained(db: Database, tmp_path: Path) -> None:
    """An insider's pending entry is chained like any other (as an entry appended to the
    unanchored tail always could be); the cross-check then names the request it misstates."""
    engine = build_engine(db, tmp_path)
    agent = engine.registry.authenticate(engine.registry.add("deploy-bot", OWNER, by="t", now=T0))
    snap, _ = engine.service.submit(agent, intent(agent), now=T0)
    insert_pending(db, kind="request.approved", request_id=snap.id, data='{"approvers":[]}')
    assert chain_pending(db.engine) == 1
    report = verify_database(db, engine.keyring)
    assert report.pending.count == 0
    assert not report.requests.ok
    assert any(snap.id in str(mismatch) for mismatch in report.requests.mismatches)


def test_the_cli_reports_pending_entries_exports_without_them_and_chains_them(
    cli_db: Cli, db: Database, tmp_path: Path
) -> None:
    engine = build_engine(db, tmp_path)
    cli_db.env["STEPUP_KEYS_DIR"] = str(tmp_path / "keys")
    request_id = traffic(engine)
    entries = len(chained_rows(db))
    clean = cli_db.run("audit", "verify")
    assert clean.code == 0, clean.stderr
    assert "pending: 0 entries waiting to be chained" in clean.stdout

    insert_pending(db, kind="request.escalated", request_id=request_id, data='{"stage":1}')
    out = cli_db.run("audit", "verify")
    # Written at T0, long ago (no chainer running): not verifiable, so not called intact.
    assert out.code == 1, out.stdout
    assert f"audit chain intact: {entries} entries" in out.stdout
    assert "pending: 1 entries written but not yet chained" in out.stdout
    assert "requests: 0 compared with their audit entries, all match; 1 with entries pending" in (
        out.stdout
    )
    assert "have waited over 60 s to be chained: not verified" in out.stderr
    assert "stepup audit chain" in out.stderr
    exported = cli_db.run("audit", "export")
    assert exported.code == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == entries
    assert "note: 1 entries are pending" in exported.stderr

    chained = cli_db.run("audit", "chain")
    assert chained.code == 0, chained.stderr
    assert "chained 1 pending entries" in chained.stdout
    after = cli_db.run("audit", "verify")
    assert after.code == 0, after.stderr
    assert f"audit chain intact: {entries + 1} entries" in after.stdout
    assert "pending: 0 entries" in after.stdout


# -- the background chainer ---------------------------------------------------------------------


@pytest.fixture
def second_db(database_url: str) -> Iterator[Database]:
    """Another replica's connection pool on the same database."""
    other = Database(database_url)
    yield other
    other.dispose()


@postgres_only
def test_one_replica_leads_the_chaining_and_another_takes_over(
    db: Database, second_db: Database, tmp_path: Path
) -> None:
    engine = build_engine(db, tmp_path)
    first = BackgroundChainer(db, interval=0.05, takeover_every=0.05)
    second = BackgroundChainer(second_db, interval=0.05, takeover_every=0.05)
    first.start()
    try:
        eventually(lambda: first.leading, message="the first chainer did not lead")
        second.start()
        request_id = traffic(engine)  # written through the first replica's pool
        eventually(lambda: not pending_rows(db), message="the entries were not chained")
        assert not second.leading
        first.stop()
        eventually(lambda: second.leading, message="the second chainer did not take over")
        insert_pending(db, kind="request.escalated", request_id=request_id, data='{"stage":1}')
        eventually(lambda: not pending_rows(db), message="the new leader did not chain")
    finally:
        first.stop()
        second.stop()
    assert CHAINER_KEY not in db.write_session_info
    report = verify_database(db, engine.keyring)
    assert report.pending.count == 0 and report.requests.ok


@postgres_only
def test_the_scheduler_runs_the_chainer_and_chains_what_is_left_on_shutdown(
    db: Database, tmp_path: Path
) -> None:
    engine = build_engine(db, tmp_path)
    scheduler = DeadlineScheduler(engine.service, sweep_interval_seconds=60, clock=lambda: T0)
    scheduler.start()
    try:
        assert scheduler.chainer is not None
        assert db.write_session_info[CHAINER_KEY] is scheduler.chainer
        traffic(engine)
    finally:
        scheduler.shutdown()
    assert pending_rows(db) == []
    report = verify_database(db, engine.keyring)
    assert report.chain.entries > 5 and report.requests.ok


# -- upgrading a database with a chained log ----------------------------------------------------


def test_migration_0008_keeps_an_existing_chained_log(db: Database, tmp_path: Path) -> None:
    config = alembic_config(db.engine)
    command.downgrade(config, "0007")
    try:
        with db.engine.begin() as conn:
            assert not db.engine.dialect.has_table(conn, "audit_pending")
            rows = chain_rows(
                [
                    {
                        "at": T0,
                        "kind": "agent.added",
                        "request_id": None,
                        "actor": "t",
                        "data": "{}",
                    }
                    for _ in range(3)
                ],
                seq=0,
                prev_hash=GENESIS_HASH,
                schedule=None,
            )
            conn.execute(insert(AuditRow), rows)
            conn.execute(
                text("UPDATE audit_head SET seq = 3, hash = :h WHERE id = 1"),
                {"h": rows[-1]["hash"]},
            )
    finally:
        upgrade(db.engine)
    engine = build_engine(db, tmp_path)
    traffic(engine)
    report = verify_database(db, engine.keyring)
    assert report.chain.entries > 3 and report.pending.count == 0 and report.requests.ok
    with db.read() as session:
        first = session.execute(select(AuditRow.hash).where(AuditRow.seq == 3)).scalar_one()
        assert first == rows[-1]["hash"]
        assert session.execute(select(func.count()).select_from(AuditPendingRow)).scalar_one() == 0


def test_the_chainer_outlives_a_database_it_cannot_reach() -> None:
    """A PostgreSQL restart (connect errors) must not end the chainer's thread for good: it
    retries; and while it runs, write sessions leave chaining to it."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = Database(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing?connect_timeout=1"
    )
    chainer = BackgroundChainer(unreachable, interval=0.01, takeover_every=0.05)
    chainer.start()
    try:
        for _ in range(100):  # bounded: a few failed turns
            time.sleep(0.02)
        assert chainer._thread is not None and chainer._thread.is_alive()
        assert unreachable.write_session_info.get(CHAINER_KEY) is chainer
    finally:
        chainer._stopping.set()
        chainer._wanted.set()
        assert chainer._thread is not None
        chainer._thread.join(timeout=10)
        unreachable.write_session_info.pop(CHAINER_KEY, None)
        unreachable.dispose()
