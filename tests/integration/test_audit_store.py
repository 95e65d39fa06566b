"""The audit chain in a real database (SQLite and PostgreSQL).

10,000 entries appended through ``SqlAuditAppender`` verify; then each kind of tampering done
behind stepup's back with raw SQL is caught and named by the first bad entry. The last test
forges a signed decision so thoroughly (every later hash and the head recomputed) that only the
signature check can catch it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import insert, text, update
from sqlalchemy.orm import Session

from core.audit.chain import (
    GENESIS_HASH,
    AuditEntry,
    ChainReport,
    SignatureCheck,
    entry_hash,
    verify_chain,
)
from core.audit.events import AuditKind
from core.audit.signatures import decision_signature_check
from core.canonical import canonical_json
from core.decisions import DECISION_TYPE
from core.errors import AuditChainBroken
from core.keys import KeyRing
from core.model import Approver, Vote
from core.storage.audit_store import (
    SqlAuditAppender,
    chain_snapshot,
    iter_entries,
    read_head,
)
from core.storage.database import Database
from core.storage.tables import AuditHeadRow, AuditRow
from tests.conftest import T0
from tests.support import OWNER, build_engine, intent

N = 10_000
BATCH = 2_500  # entries per write transaction
KINDS = [AuditKind.INTENT_SUBMITTED, AuditKind.POLICY_DECIDED, AuditKind.CREDENTIAL_ISSUED]


Inputs = tuple[AuditKind, datetime, str | None, str | None, dict[str, Any]]


def inputs(i: int) -> Inputs:
    """What entry ``i`` records: varied kinds, times to the microsecond, nulls, non-ASCII."""
    return (
        KINDS[i % len(KINDS)],
        T0 + timedelta(milliseconds=i, microseconds=i % 997),
        f"req_{i // 3:06d}",
        None if i % 5 == 0 else "deploy-bot",
        {"n": i, "note": "déploiement ✓", "nested": {"replicas": i % 7}},
    )


def append_chain(db: Database, n: int = N) -> None:
    """``n`` entries through the real appender, a few write transactions in all."""
    for start in range(1, n + 1, BATCH):
        with db.write() as session:
            appender = SqlAuditAppender(session)
            for i in range(start, min(start + BATCH, n + 1)):
                kind, at, request_id, actor, data = inputs(i)
                appender.append(kind, at=at, request_id=request_id, actor=actor, data=data)


def verify(db: Database, check: SignatureCheck | None = None) -> ChainReport:
    with db.read() as session:
        return verify_chain(iter_entries(session), head=read_head(session), check_signature=check)


def first_bad(db: Database, check: SignatureCheck | None = None) -> AuditChainBroken:
    with pytest.raises(AuditChainBroken) as info:
        verify(db, check)
    return info.value


def run_sql(db: Database, *statements: str, **params: Any) -> None:
    """Tampering behind stepup's back: plain SQL in a transaction of its own."""
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)


def all_entries(db: Database) -> list[AuditEntry]:
    with db.read() as session:
        return list(iter_entries(session))


@dataclass(frozen=True)
class Pristine:
    rows: list[dict[str, Any]]
    head: tuple[int, str]


@pytest.fixture(scope="module")
def pristine() -> Pristine:
    """The chain ``append_chain`` should write, computed independently of the database."""
    rows, prev = [], GENESIS_HASH
    for i in range(1, N + 1):
        kind, at, request_id, actor, data = inputs(i)
        fields = {
            "seq": i,
            "at": at,
            "kind": kind.value,
            "request_id": request_id,
            "actor": actor,
            "data": canonical_json(data),
            "prev_hash": prev,
        }
        prev = entry_hash(**fields)
        rows.append(fields | {"hash": prev})
    return Pristine(rows, (N, prev))


@pytest.fixture
def chain(db: Database, pristine: Pristine) -> Database:
    """``db`` holding the pristine chain and its head, bulk-inserted (fast)."""
    with db.write() as session:
        session.execute(insert(AuditRow.__table__), pristine.rows)
        seq, digest = pristine.head
        session.execute(
            update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=seq, hash=digest)
        )
    assert verify(db).entries == N
    return db


@pytest.mark.slow  # 10,000 entries hashed, inserted and verified: a few seconds per database
def test_ten_thousand_appended_entries_verify(db: Database, pristine: Pristine) -> None:
    append_chain(db)
    report = verify(db)
    assert (report.entries, report.head_seq) == (N, N)
    with db.read() as session:
        assert read_head(session) == (N, report.head_hash)
    # Exactly the chain computed without a database: every field round-trips (times to the
    # microsecond, non-ASCII text), on both databases.
    assert report.head_hash == pristine.head[1]
    with db.read() as session:
        assert [e.hash for e in iter_entries(session)] == [r["hash"] for r in pristine.rows]


def test_entries_are_chained_at_commit_and_a_rollback_drops_them(db: Database) -> None:
    """Entries are queued, then chained onto the head and written when the transaction
    commits; a transaction that fails leaves neither entries nor a moved head behind."""

    class Boom(Exception):
        pass

    def append(session: Session, i: int) -> None:
        kind, at, request_id, actor, data = inputs(i)
        SqlAuditAppender(session).append(kind, at=at, request_id=request_id, actor=actor, data=data)

    def fails() -> None:
        with db.write() as session:
            append(session, 4)
            append(session, 5)
            raise Boom

    append_chain(db, 3)
    with pytest.raises(Boom):
        fails()
    assert [e.seq for e in all_entries(db)] == [1, 2, 3]

    with db.write() as first, db.write() as second:  # two transactions open at once (PG)
        append(first, 4)
        append(second, 5)  # two appenders of one session share one queue
        append(second, 6)
        with db.read() as other:  # nothing is visible before the commits
            assert read_head(other)[0] == 3
    # the second committed first: it took seqs 4 and 5, and the first's entry came after
    entries = all_entries(db)
    assert [(e.seq, e.data) for e in entries[3:]] == [
        (4, canonical_json(inputs(5)[4])),
        (5, canonical_json(inputs(6)[4])),
        (6, canonical_json(inputs(4)[4])),
    ]
    assert verify(db).entries == 6

    # One session, two transactions: nothing the failed one queued is written by the next.
    def fails_in(session: Session) -> None:
        with session.begin():
            append(session, 7)
            raise Boom

    with Session(db.engine) as session:
        with pytest.raises(Boom):
            fails_in(session)
        with session.begin():
            append(session, 8)
    assert [(e.seq, e.data) for e in all_entries(db)[6:]] == [(7, canonical_json(inputs(8)[4]))]
    assert verify(db).entries == 7


def test_entry_hash_format_is_stable() -> None:
    """Logs already written must keep verifying: the hashed bytes never change."""
    at = datetime(2026, 11, 2, 10, 30, 0, 42, tzinfo=timezone(timedelta(hours=1)))
    data = '{"note":"déploiement ✓"}'
    material = (
        "1:7;32:2026-11-02T09:30:00.000042+00:00;17:decision.recorded;0:;"
        f"17:alice@example.com;{len(data)}:{data};64:{GENESIS_HASH};"
    )
    digest = entry_hash(
        seq=7,
        at=at,
        kind="decision.recorded",
        request_id=None,
        actor="alice@example.com",
        data=data,
        prev_hash=GENESIS_HASH,
    )
    assert digest == hashlib.sha256(material.encode("utf-8")).hexdigest()
    assert digest == "a7622ef51c0e060b4853f4e44b5d35076b0a6580bbdb6e689e363a58759e748d"


def test_empty_log_verifies(db: Database) -> None:
    report = verify(db)
    assert (report.entries, report.head_hash) == (0, GENESIS_HASH)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("data", '{"n":-1}'),
        ("kind", "request.approved"),
        ("actor", "mallory"),
        ("request_id", None),
    ],
)
def test_modified_column_is_named(chain: Database, column: str, value: str | None) -> None:
    run_sql(chain, f"UPDATE audit_log SET {column} = :v WHERE seq = 4321", v=value)
    broken = first_bad(chain)
    assert broken.seq == 4321
    assert "hash mismatch" in broken.detail


def test_modified_time_is_named(chain: Database) -> None:
    # Through the column type, so each backend gets the time in its own storage format.
    with chain.engine.begin() as conn:
        conn.execute(update(AuditRow).where(AuditRow.seq == 777).values(at=T0 - timedelta(days=1)))
    assert first_bad(chain).seq == 777


def test_deleted_middle_entry_is_named(chain: Database) -> None:
    run_sql(chain, "DELETE FROM audit_log WHERE seq = 5000")
    broken = first_bad(chain)
    assert broken.seq == 5000
    assert "missing" in broken.detail


def test_deleted_last_entries_are_caught_by_the_head(chain: Database) -> None:
    run_sql(chain, "DELETE FROM audit_log WHERE seq = :n", n=N)
    broken = first_bad(chain)
    assert broken.seq == N
    assert "head" in broken.detail
    run_sql(chain, "DELETE FROM audit_log WHERE seq > :k", k=N - 100)
    assert first_bad(chain).seq == N - 99


def test_inserted_entry_with_renumbering_is_named(chain: Database) -> None:
    k = 2500
    before = all_entries(chain)[k - 2]
    assert before.seq == k - 1
    forged_at = before.at + timedelta(microseconds=1)
    forged = entry_hash(
        seq=k,
        at=forged_at,
        kind="request.approved",
        request_id="req_forged",
        actor="mallory",
        data="{}",
        prev_hash=before.hash,
    )
    # Make room (two steps, since a primary key is checked row by row), insert a well-formed
    # entry that links to its predecessor, and move the head on as a careful attacker would.
    run_sql(
        chain,
        "UPDATE audit_log SET seq = -(seq + 1) WHERE seq >= :k",
        "UPDATE audit_log SET seq = -seq WHERE seq < 0",
        "UPDATE audit_head SET seq = seq + 1",
        k=k,
    )
    with chain.engine.begin() as conn:
        conn.execute(
            insert(AuditRow).values(
                seq=k,
                at=forged_at,
                kind="request.approved",
                request_id="req_forged",
                actor="mallory",
                data="{}",
                prev_hash=before.hash,
                hash=forged,
            )
        )
    broken = first_bad(chain)
    assert broken.seq == k + 1  # the forged entry itself is consistent; its successor is not
    assert "previous entry's hash" in broken.detail


def test_entry_appended_past_the_head_is_named(chain: Database) -> None:
    last = all_entries(chain)[-1]
    digest = entry_hash(
        seq=N + 1,
        at=last.at,
        kind="request.approved",
        request_id=None,
        actor="mallory",
        data="{}",
        prev_hash=last.hash,
    )
    with chain.engine.begin() as conn:
        conn.execute(
            insert(AuditRow).values(
                seq=N + 1,
                at=last.at,
                kind="request.approved",
                request_id=None,
                actor="mallory",
                data="{}",
                prev_hash=last.hash,
                hash=digest,
            )
        )
    broken = first_bad(chain)
    assert broken.seq == N + 1
    assert "beyond the recorded head" in broken.detail


def test_reordered_entries_are_named(chain: Database) -> None:
    run_sql(
        chain,
        "UPDATE audit_log SET seq = -1 WHERE seq = 700",
        "UPDATE audit_log SET seq = 700 WHERE seq = 701",
        "UPDATE audit_log SET seq = 701 WHERE seq = -1",
    )
    assert first_bad(chain).seq == 700


def test_entry_appended_while_verifying_is_not_tampering(db: Database) -> None:
    append_chain(db, 50)
    with chain_snapshot(db) as session:
        head = read_head(session)
        # The running service appends between our two reads (a connection of its own).
        append_one(db, 51)
        report = verify_chain(iter_entries(session), head=head)
    assert (report.entries, report.head_seq) == (50, 50)
    assert verify(db).entries == 51  # a later snapshot sees the new entry, and it is valid


def append_one(db: Database, seq: int) -> None:
    with db.write() as session:
        SqlAuditAppender(session).append(
            AuditKind.REQUEST_EXPIRED,
            at=T0 + timedelta(hours=1),
            request_id=f"req_{seq}",
            actor="scheduler",
            data={"was": "pending"},
        )


# -- signed decisions ---------------------------------------------------------------------------


def rewrite_from(db: Database, seq: int, data: str) -> None:
    """Replace entry ``seq``'s data and recompute its hash, every later hash and the head."""
    entries = all_entries(db)
    prev = entries[seq - 2].hash if seq > 1 else GENESIS_HASH
    with db.engine.begin() as conn:
        for entry in entries[seq - 1 :]:
            new_data = data if entry.seq == seq else entry.data
            digest = entry_hash(
                seq=entry.seq,
                at=entry.at,
                kind=entry.kind,
                request_id=entry.request_id,
                actor=entry.actor,
                data=new_data,
                prev_hash=prev,
            )
            conn.execute(
                text("UPDATE audit_log SET data = :d, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"d": new_data, "p": prev, "h": digest, "s": entry.seq},
            )
            prev = digest
        conn.execute(text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": prev})


def corrupt_signature(jws: str, _attacker: KeyRing) -> str:
    header, payload, signature = jws.split(".")
    middle = len(signature) // 2  # not the last character, whose low bits are padding
    swapped = "A" if signature[middle] != "A" else "B"
    return f"{header}.{payload}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"


def resign_with_other_key(jws: str, attacker: KeyRing) -> str:
    payload = jwt.decode(jws, options={"verify_signature": False})
    return attacker.sign(payload, typ=DECISION_TYPE)


@pytest.mark.parametrize("forge", [corrupt_signature, resign_with_other_key, None])
def test_forged_decision_is_caught_only_by_its_signature(
    db: Database, tmp_path: Path, forge: Any
) -> None:
    engine = build_engine(db, tmp_path)
    agent = engine.registry.authenticate(engine.registry.add("deploy-bot", OWNER, by="t", now=T0))
    snap, _ = engine.service.submit(agent, intent(agent), now=T0)
    for i, who in enumerate(["U0ALICE", "U0BOB"], start=1):
        approver = Approver(who, f"{who[3:].lower()}@example.com")
        engine.service.vote(snap.id, approver, Vote.APPROVE, now=T0 + timedelta(seconds=i))
    check = decision_signature_check(engine.keyring)
    clean = verify(db, check)

    decisions = [e for e in all_entries(db) if e.kind == AuditKind.DECISION_RECORDED.value]
    assert len(decisions) == 2
    target = decisions[0]
    assert target.seq < clean.head_seq - 1  # later entries must be rewritten too
    data = json.loads(target.data)
    if forge is None:  # a valid signature, but the entry around it now tells another story
        data["vote"] = Vote.DENY.value
    else:
        data["signed_decision"] = forge(
            data["signed_decision"], KeyRing.load_or_create(tmp_path / "x")
        )
    rewrite_from(db, target.seq, canonical_json(data))

    # The hash chain alone is satisfied: same length, a new and consistent head.
    forged = verify(db)
    assert forged.entries == clean.entries
    assert forged.head_hash != clean.head_hash
    broken = first_bad(db, check)
    assert broken.seq == target.seq
    assert "signature" in broken.detail
