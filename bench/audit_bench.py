"""Audit chain verification speed, in memory and end to end from the database.

Builds a chain of ``--entries`` entries (one in ten a real signed decision) in a scratch SQLite
file and, when reachable, in a scratch PostgreSQL database created for the run and dropped
after it. The first ``--append`` entries go through ``SqlAuditAppender`` (the production path,
timed); the rest are hashed the same way and bulk-inserted so that building stays quick.
Then it times:

  hash chain, in memory    verify_chain over entries already loaded (no signature checks)
  from DB                  verify_chain(iter_entries(session), head=read_head(session))
  from DB + signatures     the same with decision_signature_check, as `stepup audit verify`

    .venv/bin/python bench/audit_bench.py [--entries 200000] [--no-postgres]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text, update
from temp_postgres import temporary_database

from core.audit.chain import ChainReport, SignatureCheck, entry_hash, verify_chain
from core.audit.events import AuditKind
from core.audit.signatures import decision_signature_check
from core.canonical import canonical_json
from core.decisions import DecisionRecord, sign_decision
from core.keys import KeyRing
from core.model import Vote
from core.storage.audit_store import SqlAuditAppender, chain_snapshot, iter_entries, read_head
from core.storage.database import Database
from core.storage.migrate import upgrade
from core.storage.tables import AuditHeadRow, AuditRow

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
TARGET = 50_000  # entries per second
INSERT_BATCH = 10_000

Fields = tuple[AuditKind, datetime, str | None, str | None, dict[str, Any]]


def entry_fields(i: int, keyring: KeyRing) -> Fields:
    """Entry ``i`` of a plausible log: a request's events, one in ten a signed decision."""
    at = T0 + timedelta(milliseconds=37 * i, microseconds=i % 1000)
    request_id = f"req_{i // 10:08d}"
    if i % 10 == 3:
        record = DecisionRecord(
            request_id=request_id,
            parameters_digest="sha256:" + "ab" * 32,
            decision=Vote.APPROVE,
            approver_slack_id="U0ALICE",
            approver_email="alice@example.com",
            decided_at=at,
            rule="prod-destructive",
            reason=None,
        )
        jws = sign_decision(record, keyring)
        data: dict[str, Any] = {"vote": "approve", "signed_decision": jws}
        return AuditKind.DECISION_RECORDED, at, request_id, "alice@example.com", data
    if i % 10 == 0:
        intent = {"action": "k8s.rollout_restart", "target": "payments-api", "n": i}
        return AuditKind.INTENT_SUBMITTED, at, request_id, "deploy-bot", intent
    kind = (AuditKind.POLICY_DECIDED, AuditKind.CREDENTIAL_ISSUED)[i % 2]
    return kind, at, request_id, None, {"rule": "prod-destructive", "tier": "high", "i": i}


def build_chain(db: Database, total: int, appended: int, keyring: KeyRing) -> float:
    """Fill ``db``; returns the appender's rate (entries/s) over its share."""
    started = time.perf_counter()
    with db.write() as session:
        appender = SqlAuditAppender(session)
        for i in range(1, appended + 1):
            kind, at, request_id, actor, payload = entry_fields(i, keyring)
            appender.append(kind, at=at, request_id=request_id, actor=actor, data=payload)
    append_rate = appended / (time.perf_counter() - started)
    with db.read() as session:
        seq, prev = read_head(session)
    for start in range(seq + 1, total + 1, INSERT_BATCH):
        rows = []
        for i in range(start, min(start + INSERT_BATCH, total + 1)):
            kind, at, request_id, actor, payload = entry_fields(i, keyring)
            fields: dict[str, Any] = {
                "seq": i,
                "at": at,
                "kind": kind.value,
                "request_id": request_id,
                "actor": actor,
                "data": canonical_json(payload),
                "prev_hash": prev,
            }
            prev = entry_hash(**fields)
            rows.append(fields | {"hash": prev})
        with db.write() as session:
            session.execute(insert(AuditRow), rows)
            session.execute(
                update(AuditHeadRow)
                .where(AuditHeadRow.id == 1)
                .values(seq=rows[-1]["seq"], hash=prev)
            )
    return append_rate


def timed(run: Callable[[], ChainReport]) -> tuple[float, ChainReport]:
    started = time.perf_counter()
    report = run()
    return time.perf_counter() - started, report


def verify_in_memory(db: Database, total: int) -> float:
    with chain_snapshot(db) as session:
        entries, head = list(iter_entries(session)), read_head(session)
    seconds, report = timed(lambda: verify_chain(entries, head=head))
    assert report.entries == total, report
    return total / seconds


def verify_from_db(db: Database, total: int, check: SignatureCheck | None) -> float:
    def run() -> ChainReport:
        with chain_snapshot(db) as session:
            return verify_chain(
                iter_entries(session), head=read_head(session), check_signature=check
            )

    # Best of three: the machine is shared, and the first pass also warms the OS page cache.
    passes = [timed(run) for _ in range(3)]
    assert all(report.entries == total for _, report in passes), passes
    return total / min(seconds for seconds, _ in passes)


def measure(db: Database, keyring: KeyRing, total: int) -> dict[str, float]:
    return {
        "memory": verify_in_memory(db, total),
        "db": verify_from_db(db, total, None),
        "signed": verify_from_db(db, total, decision_signature_check(keyring)),
    }


def bench_sqlite(total: int, appended: int, keyring: KeyRing, workdir: Path) -> dict[str, float]:
    db = Database(f"sqlite:///{workdir / 'audit_bench.db'}")
    try:
        upgrade(db.engine)
        rates = {"append": build_chain(db, total, appended, keyring)}
        return rates | measure(db, keyring, total)
    finally:
        db.dispose()


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A database of our own for the run, always dropped after it."""
    with temporary_database(admin_url, "stepup_audit_bench") as url:
        yield url


def bench_postgres(admin_url: str, total: int, appended: int, keyring: KeyRing) -> dict[str, float]:
    with scratch_postgres(admin_url) as url:
        db = Database(url)
        try:
            upgrade(db.engine)
            rates = {"append": build_chain(db, total, appended, keyring)}
            return rates | measure(db, keyring, total)
        finally:
            db.dispose()


def postgres_unreachable(admin_url: str) -> str | None:
    try:
        engine = create_engine(admin_url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure means: skip PostgreSQL, say why
        return exc.__class__.__name__
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--append", type=int, default=5_000, help="entries via SqlAuditAppender")
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL, help="admin URL")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    total, appended = args.entries, min(args.append, args.entries)

    print(f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{total:,} entries, one in ten a signed decision")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="stepup-audit-bench-") as tmp:
        keyring = KeyRing.load_or_create(Path(tmp) / "keys")
        results["SQLite"] = bench_sqlite(total, appended, keyring, Path(tmp))
        reason = None if args.no_postgres else postgres_unreachable(args.postgres_url)
        if args.no_postgres:
            print("PostgreSQL: skipped (--no-postgres)")
        elif reason is not None:
            print(f"PostgreSQL: skipped, unreachable at {args.postgres_url} ({reason})")
        else:
            results["PostgreSQL"] = bench_postgres(args.postgres_url, total, appended, keyring)

    columns = [
        ("append", f"append ({appended:,})"),
        ("memory", "hash chain, in memory"),
        ("db", "from DB"),
        ("signed", "from DB + signatures"),
    ]
    print()
    print("| database | " + " | ".join(title for _, title in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, rates in results.items():
        cells = " | ".join(f"{rates[key]:,.0f}/s" for key, _ in columns)
        print(f"| {name} | {cells} |")
    slowest = min(rates[key] for rates in results.values() for key in ("memory", "db"))
    verdict = "meets" if slowest >= TARGET else "MISSES"
    print(f"\nhash chain: {verdict} the {TARGET:,} entries/s target (slowest {slowest:,.0f}/s)")


if __name__ == "__main__":
    main()
