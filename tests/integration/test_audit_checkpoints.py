"""Signed checkpoints of the audit chain, on SQLite and PostgreSQL: written every N entries in
the append path, by the time-based job and with each digest; verified by ``audit verify``;
and the attacks only they catch — entries deleted and every later hash and the head
recomputed (the hash chain alone is satisfied), the log cut short — each named.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, update

from core.audit.chain import GENESIS_HASH, AuditEntry, entry_hash, verify_chain
from core.audit.checkpoints import CheckpointSchedule, sign_checkpoint, verify_checkpoint
from core.audit.events import AuditKind
from core.keys import KeyRing
from core.model import Approver, SessionOutcome, Vote
from core.notices import NoticeKind
from core.storage.audit_store import (
    SqlAuditAppender,
    checkpoint_head,
    iter_entries,
    read_head,
    sign_checkpoints,
)
from core.storage.database import Database
from core.storage.tables import AuditHeadRow, AuditRow, OutboxRow
from core.usecases.digest import post_digest
from tests.conftest import T0
from tests.integration import test_cli
from tests.integration.test_cli import Cli
from tests.support import OWNER, Engine, build_engine, intent

cli, cli_db = test_cli.cli, test_cli.cli_db  # the CLI's fixtures: STEPUP_* only, scratch cwd
CHECKPOINT = AuditKind.AUDIT_CHECKPOINT.value


def entries(db: Database) -> list[AuditEntry]:
    with db.read() as session:
        return list(iter_entries(session))


def kinds(db: Database) -> list[str]:
    return ["cp" if e.kind == CHECKPOINT else "e" for e in entries(db)]


def append(db: Database, n: int, *, at_minutes: int = 0) -> None:
    """``n`` entries in one write transaction (one session: the schedule is in its info)."""
    with db.write() as session:
        appender = SqlAuditAppender(session)
        for i in range(n):
            appender.append(
                AuditKind.REQUEST_ESCALATED,
                at=T0 + timedelta(minutes=at_minutes, seconds=i),
                request_id=None,
                actor="scheduler",
                data={"stage": i, "to": None},
            )


def traffic(db: Database, tmp_path: Path, *, every: int = 0) -> Engine:
    """Real engine traffic (two agents, approvals, a claimed and completed request, a second
    request), with a checkpoint every ``every`` entries when given."""
    engine = build_engine(db, tmp_path)
    if every:
        sign_checkpoints(db, CheckpointSchedule(engine.keyring, every))
    svc = engine.service
    agent = engine.registry.authenticate(engine.registry.add("deploy-bot", OWNER, by="t", now=T0))
    engine.registry.add("ops-bot", OWNER, by="t", now=T0)
    for hour in range(2):
        at = T0 + timedelta(hours=hour)
        snap, _ = svc.submit(agent, intent(agent), now=at)
        for i, who in enumerate(["U0ALICE", "U0BOB"], start=1):
            approver = Approver(who, f"{who[3:].lower()}@example.com")
            svc.vote(snap.id, approver, Vote.APPROVE, now=at + timedelta(seconds=i))
        svc.claim(snap.id, agent, now=at + timedelta(seconds=5))
        svc.complete(snap.id, agent, SessionOutcome.SUCCEEDED, "ok", now=at + timedelta(seconds=9))
    return engine


def rewrite_chain(db: Database, kept: list[AuditEntry]) -> None:
    """The careful attacker: the log replaced by ``kept``, renumbered from 1, every hash and
    the head recomputed (request rows are left alone)."""
    rows, prev = [], GENESIS_HASH
    for seq, entry in enumerate(kept, start=1):
        fields = {
            "seq": seq,
            "at": entry.at,
            "kind": entry.kind,
            "request_id": entry.request_id,
            "actor": entry.actor,
            "data": entry.data,
            "prev_hash": prev,
        }
        prev = entry_hash(**fields)
        rows.append(fields | {"hash": prev})
    with db.engine.begin() as conn:
        conn.execute(delete(AuditRow))
        if rows:
            conn.execute(insert(AuditRow), rows)
        conn.execute(update(AuditHeadRow).values(seq=len(rows), hash=prev))


def chain_alone_verifies(db: Database) -> None:
    """What ``audit verify`` checked before checkpoints: hashes, links, the head."""
    with db.read() as session:
        verify_chain(iter_entries(session), head=read_head(session))


# -- writing -----------------------------------------------------------------------------------


def test_a_checkpoint_follows_the_write_that_passes_every_nth_entry(
    db: Database, tmp_path: Path
) -> None:
    keyring = KeyRing.load_or_create(tmp_path / "keys")
    sign_checkpoints(db, CheckpointSchedule(keyring, 5))
    append(db, 3)  # 1-3
    append(db, 3)  # 4-6: passes 5, checkpoint 7 signs 6
    append(db, 1)  # 8
    append(db, 2)  # 9-10: reaches 10, checkpoint 11 signs 10
    append(db, 12)  # 12-23: passes 15 and 20, one checkpoint (24) after the write
    assert kinds(db) == ["e"] * 6 + ["cp"] + ["e"] * 3 + ["cp"] + ["e"] * 12 + ["cp"]
    log = entries(db)
    for entry in log:
        if entry.kind == CHECKPOINT:
            before = log[entry.seq - 2]
            checkpoint = verify_checkpoint(json.loads(entry.data)["signed"], keyring)
            assert (checkpoint.seq, checkpoint.hash) == (before.seq, before.hash)
            assert checkpoint.at == before.at == entry.at
    with db.read() as session:
        assert read_head(session) == (24, log[-1].hash)


def test_without_a_schedule_no_checkpoint_is_written(db: Database) -> None:
    append(db, 30)
    assert kinds(db) == ["e"] * 30


def test_checkpoint_head_appends_one_only_when_entries_came_since(
    db: Database, tmp_path: Path
) -> None:
    keyring = KeyRing.load_or_create(tmp_path / "keys")
    assert checkpoint_head(db, keyring, now=T0) is None  # an empty log: nothing to sign
    assert kinds(db) == []
    append(db, 4)
    first = checkpoint_head(db, keyring, now=T0 + timedelta(hours=1))
    assert first is not None and (first.seq, first.at) == (4, T0 + timedelta(hours=1))
    assert first.hash == entries(db)[3].hash
    again = checkpoint_head(db, keyring, now=T0 + timedelta(hours=2))
    assert again == first  # nothing since: the same checkpoint, no new entry
    assert kinds(db) == ["e"] * 4 + ["cp"]
    append(db, 1)
    third = checkpoint_head(db, keyring, now=T0 + timedelta(hours=3))
    assert third is not None and third.seq == 6
    assert kinds(db) == ["e"] * 4 + ["cp", "e", "cp"]


def test_replicas_checkpointing_at_once_append_one(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    keyring = KeyRing.load_or_create(tmp_path / "keys")
    append(db, 3)
    replicas = [Database(database_url) for _ in range(4)]
    start = threading.Barrier(len(replicas))
    results: list[Any] = [None] * len(replicas)

    def run(index: int) -> None:
        start.wait()
        results[index] = checkpoint_head(replicas[index], keyring, now=T0 + timedelta(hours=1))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(replicas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for replica in replicas:
        replica.dispose()
    assert kinds(db) == ["e"] * 3 + ["cp"]
    assert {(r.seq, r.hash, r.signed) for r in results} == {
        (results[0].seq, results[0].hash, results[0].signed)
    }


# -- verifying ---------------------------------------------------------------------------------


def test_verify_checks_every_checkpoint_and_says_what_is_not_yet_anchored(
    cli_db: Cli, db: Database, tmp_path: Path
) -> None:
    traffic(db, tmp_path, every=5)
    log = entries(db)
    checkpoints = [e.seq for e in log if e.kind == CHECKPOINT]
    assert len(checkpoints) >= 3
    out = cli_db.invoke("audit", "verify")
    assert out.code == 0, out.stderr
    assert f"signatures: 4 signed decisions and {len(checkpoints)} checkpoints verified" in (
        out.stdout
    )
    tail = len(log) - checkpoints[-1]
    if tail:
        assert (
            f"warning: not yet anchored: {tail} entries after seq {checkpoints[-1]} "
            "(the last checkpoint)"
        ) in out.stderr
    checkpoint_head(db, KeyRing.load_or_create(tmp_path / "keys"), now=T0 + timedelta(days=1))
    anchored = cli_db.invoke("audit", "verify")
    assert anchored.code == 0 and "not yet anchored" not in anchored.stderr


def test_a_forged_checkpoint_is_named(cli_db: Cli, db: Database, tmp_path: Path) -> None:
    """A checkpoint entry signed with another key, its chain consistent: only its signature
    tells."""
    traffic(db, tmp_path, every=5)
    log = entries(db)
    target = next(e for e in log if e.kind == CHECKPOINT)
    other = KeyRing.load_or_create(tmp_path / "attacker")
    forged = sign_checkpoint(other, seq=target.seq - 1, hash=target.prev_hash, at=target.at)
    data = {"seq": forged.seq, "hash": forged.hash, "signed": forged.signed}
    rewrite_chain(
        db,
        [
            replace(e, data=json.dumps(data, sort_keys=True, separators=(",", ":")))
            if e is target
            else e
            for e in log
        ],
    )
    chain_alone_verifies(db)
    out = cli_db.invoke("audit", "verify")
    assert out.code == 1
    assert f"entry {target.seq}: bad checkpoint (signed by key '{other.active_kid}'" in out.stderr


def test_entries_deleted_and_the_chain_recomputed_are_caught_by_the_next_checkpoint(
    cli_db: Cli, db: Database, tmp_path: Path
) -> None:
    traffic(db, tmp_path, every=5)
    log = entries(db)
    first_checkpoint = next(e.seq for e in log if e.kind == CHECKPOINT)
    # The second agent's registration, before the first checkpoint: it touches no request,
    # so only the chain can tell.
    victim = next(e for e in log if e.kind == "agent.added" and "ops-bot" in e.data)
    assert victim.seq < first_checkpoint
    rewrite_chain(db, [e for e in log if e is not victim])
    chain_alone_verifies(db)  # hashes, links and head all agree: the old verify said intact
    out = cli_db.invoke("audit", "verify")
    assert out.code == 1
    assert (
        f"error: audit chain broken at entry {first_checkpoint - 1}: checkpoint signed for "
        f"entry {first_checkpoint - 1} with hash {log[first_checkpoint - 2].hash}, but the "
        f"entry before it is {first_checkpoint - 2}"
    ) in out.stderr
    assert "the log before this checkpoint was rewritten" in out.stderr


def digest_checkpoint(engine: Engine) -> str:
    """Post the day's digest and return the checkpoint JWS its message carries."""
    now = T0 + timedelta(days=1)
    assert post_digest(engine.db, engine.keyring, now=now, timezone="UTC", channel="C0SEC")
    with engine.db.read() as session:
        row = session.query(OutboxRow).filter(OutboxRow.kind == NoticeKind.CHANNEL.value).one()
        payload = json.loads(row.payload)
    (line,) = [x for x in payload["text"].splitlines() if x.startswith("Audit checkpoint:")]
    return line.rsplit("--checkpoint ", 1)[1]


def test_the_digest_carries_a_fresh_checkpoint_of_the_head(
    cli_db: Cli, db: Database, tmp_path: Path
) -> None:
    engine = traffic(db, tmp_path)  # no every-N checkpoints: the digest's is the first
    before = entries(db)
    signed = digest_checkpoint(engine)
    checkpoint = verify_checkpoint(signed, engine.keyring)
    assert (checkpoint.seq, checkpoint.hash) == (before[-1].seq, before[-1].hash)
    assert kinds(db) == ["e"] * len(before) + ["cp"]
    out = cli_db.invoke("audit", "verify", "--checkpoint", signed)
    assert out.code == 0, out.stderr
    assert (
        f"confirmed: the checkpoint of seq {checkpoint.seq} signed "
        f"{checkpoint.at.isoformat(timespec='microseconds')} matches entry {checkpoint.seq}"
    ) in out.stdout
    assert "not yet anchored" not in out.stderr


def test_a_thorough_rewrite_is_caught_by_the_digests_checkpoint(
    cli_db: Cli, db: Database, tmp_path: Path
) -> None:
    """Entries deleted, every checkpoint after them dropped too, the chain recomputed: the
    database alone looks intact (not yet anchored); the checkpoint Slack holds does not."""
    engine = traffic(db, tmp_path, every=5)
    signed = digest_checkpoint(engine)
    anchored = verify_checkpoint(signed, engine.keyring).seq
    log = entries(db)
    victim = next(e for e in log if e.kind == "agent.added" and "ops-bot" in e.data)
    kept = [e for e in log if e is not victim and not (e.kind == CHECKPOINT and e.seq > victim.seq)]
    rewrite_chain(db, kept)
    chain_alone_verifies(db)
    alone = cli_db.invoke("audit", "verify")
    assert alone.code == 0, alone.stderr
    assert "warning: not yet anchored:" in alone.stderr
    out = cli_db.invoke("audit", "verify", "--checkpoint", signed)
    assert out.code == 1
    remaining = len(kept)
    assert remaining < anchored  # entries were dropped: the anchored seq is past the end
    assert (
        f"error: audit chain broken at entry {remaining + 1}: missing: the checkpoint of seq "
        f"{anchored} signed"
    ) in out.stderr
    assert f"holds entry {anchored}, but the log ends at {remaining} (entries were removed)" in (
        out.stderr
    )


def test_a_rewrite_that_keeps_the_length_is_caught_by_the_digests_checkpoint(
    cli_db: Cli, db: Database, tmp_path: Path
) -> None:
    """One entry's content changed and the chain recomputed (same length): the entry the
    digest's checkpoint names now has another hash."""
    engine = traffic(db, tmp_path)
    signed = digest_checkpoint(engine)
    anchored = verify_checkpoint(signed, engine.keyring)
    log = entries(db)
    victim = next(e for e in log if e.kind == "agent.added" and "ops-bot" in e.data)
    forged = replace(victim, data=victim.data.replace("ops-bot", "ops-bot-2"))
    rewrite_chain(db, [forged if e is victim else e for e in log if e.kind != CHECKPOINT])
    chain_alone_verifies(db)
    out = cli_db.invoke("audit", "verify", "--checkpoint", signed)
    assert out.code == 1
    assert f"error: audit chain broken at entry {anchored.seq}: does not match the checkpoint" in (
        out.stderr
    )
    assert "the log up to here was rewritten" in out.stderr


def test_a_log_cut_short_is_caught_by_an_earlier_checkpoint(
    cli_db: Cli, db: Database, tmp_path: Path
) -> None:
    engine = traffic(db, tmp_path, every=5)
    append(db, 8, at_minutes=600)  # the last entries touch no request: only the chain can tell
    signed = digest_checkpoint(engine)
    anchored = verify_checkpoint(signed, engine.keyring).seq
    keep = anchored - 5
    tail = entries(db)[keep - 1]
    with db.engine.begin() as conn:  # the last entries deleted, the head moved back
        conn.execute(delete(AuditRow).where(AuditRow.seq > keep))
        conn.execute(update(AuditHeadRow).values(seq=tail.seq, hash=tail.hash))
    chain_alone_verifies(db)
    assert cli_db.invoke("audit", "verify").code == 0
    checkpoints_file = tmp_path / "checkpoints.txt"
    checkpoints_file.write_text(f"# from the digest of 2026-11-03\n{signed}\n\n", encoding="utf-8")
    out = cli_db.invoke("audit", "verify", "--checkpoint", str(checkpoints_file))
    assert out.code == 1
    assert f"audit chain broken at entry {keep + 1}: missing: the checkpoint of seq {anchored}" in (
        out.stderr
    )


def test_a_checkpoint_of_another_service_is_refused(
    cli_db: Cli, db: Database, tmp_path: Path
) -> None:
    traffic(db, tmp_path)
    other = KeyRing.load_or_create(tmp_path / "other")
    last = entries(db)[-1]
    foreign = sign_checkpoint(other, seq=last.seq, hash=last.hash, at=T0)
    out = cli_db.invoke("audit", "verify", "--checkpoint", foreign.signed)
    assert out.code == 1
    assert (
        f"error: checkpoint 1 given is not a valid checkpoint of this service (signed by key "
        f"'{other.active_kid}', which is not among the public keys given)"
    ) in out.stderr


# -- the service's wiring ----------------------------------------------------------------------


def service_settings(database_url: str, tmp_path: Path, **env: str) -> Any:
    from bot.settings import Settings

    values = {
        "STEPUP_DATABASE_URL": database_url,
        "STEPUP_KEYS_DIR": str(tmp_path / "keys"),
        "STEPUP_POLICY_FILE": str(build_policy(tmp_path)),
        **env,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


def build_policy(tmp_path: Path) -> Path:
    from tests.support import TEST_POLICY

    path = tmp_path / "policy.yaml"
    path.write_text(TEST_POLICY, encoding="utf-8")
    return path


def test_the_service_signs_a_checkpoint_every_n_entries_as_configured(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    from bot.wiring import build_service
    from core.agents import AgentRegistry

    settings = service_settings(database_url, tmp_path, STEPUP_AUDIT_CHECKPOINT_ENTRIES="3")
    assert settings.audit_checkpoint_entries == 3
    service = build_service(settings)
    try:
        registry = AgentRegistry(service)
        for name in ("a-bot", "b-bot", "c-bot", "d-bot"):
            registry.add(name, OWNER, by="t", now=T0)
    finally:
        service.db.dispose()
    assert kinds(db) == ["e", "e", "e", "cp", "e"]


def test_the_server_schedules_the_time_based_checkpoint(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    from bot.scheduler import CHECKPOINT_JOB
    from bot.server import build_runtime

    settings = service_settings(database_url, tmp_path, STEPUP_AUDIT_CHECKPOINT_MINUTES="15")
    runtime = build_runtime(settings)
    try:
        job = runtime.scheduler.scheduler.get_job(CHECKPOINT_JOB)
        assert job is not None
        assert job.trigger.interval == timedelta(minutes=15)
        run: Callable[[], None] = job.func
        run()  # an empty log: nothing to sign
        assert kinds(db) == []
        append(db, 2)
        run()
        run()  # nothing new since: idempotent
        assert kinds(db) == ["e", "e", "cp"]
    finally:
        runtime.context.service.db.dispose()
    off = build_runtime(
        service_settings(database_url, tmp_path, STEPUP_AUDIT_CHECKPOINT_MINUTES="0")
    )
    try:
        assert off.scheduler.scheduler.get_job(CHECKPOINT_JOB) is None
    finally:
        off.context.service.db.dispose()
