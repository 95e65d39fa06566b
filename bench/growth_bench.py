"""Flat as history grows: submit rate and p99 on a database holding a long history vs an empty one.

For each database kind (SQLite, PostgreSQL) two databases are prepared the same way (migrated,
the agent `bench-bot` registered with `stepup agents add`, seven more agents added through
`AgentRegistry`, one real request submitted through the engine as the template of the rows
below); one of them (B) then gets ``--history`` requests and ``--audit-per-request`` audit
entries per request, bulk-inserted with SQLAlchemy Core in the shape the service writes them:

- requests: clones of the template row, spread over the last 90 days and over the 8 agents
  (bench-bot has its share), statuses spread as a deployment's would be (completed 45 %,
  expired 18 %, denied 12 %, revoked 10 %, cancelled 6 %, and 3 % each still pending,
  approved and active with deadlines hours ahead), 30 % with an idempotency key, parameters
  varied (so their digests differ), decided_at / credential / outcome set as the status says;
  a credentials row for every request that was claimed, and a `done` issuer revocation
  for every credential revoked;
- audit entries: per request `intent.submitted` and `policy.decided` (the template's own
  entries, request id and agent swapped) and one entry for how it ended (session.completed,
  request.expired, ...), interleaved between requests in blocks of 1,000 requests, chained
  exactly as the appender chains them (seq, prev_hash, `core.audit.chain.entry_hash`), with a
  signed checkpoint entry after every 1,000th entry (the service's default,
  STEPUP_AUDIT_CHECKPOINT_ENTRIES), and the head row advanced. The chain is verified from the
  database before the servers start (`verify_chain`), so it is a chain `stepup audit verify`
  accepts. This assumes history is chained rows (seq, prev_hash, hash) plus the head row, the
  schema of `core/storage/tables.py` at the time of writing; a design that chains entries
  later writes old history in this same final shape.

Then one `stepup serve` per database (A empty, B history) runs side by side and they take the
same closed-loop load (``--concurrency`` keep-alive clients, pre-authorised submits) in
interleaved rounds: A B, B A, A B ... (each pair in the opposite order to the last, so a linear
drift of the machine's load weighs on both equally). Reported per round: rate, p50, p99, server
CPU per request; the verdict is the median over rounds of B/A (rate and p99). Goal: within 10 %.
The per-agent limits are on, set high (1,000,000), so their code runs without refusing.

Last, the statements of one submit (through the real app, in process, on B) and of one
scheduler sweep are captured and each is EXPLAINed on B: a plan that scans a table (SQLite
`SCAN`, PostgreSQL `Seq Scan`) is flagged, as it would grow with history.

    .venv/bin/python bench/growth_bench.py              # 200,000 requests / 600,000 entries
    .venv/bin/python bench/growth_bench.py --quick      # 20,000 / 60,000, short rounds
    .venv/bin/python bench/growth_bench.py --dbs sqlite --history 50000 --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from api_bench import (
    CLOSED_LOOP_ADMISSION,
    check_once,
    postgres_unreachable,
    register_agent,
    server_env,
)
from loadgen import PhaseResult, encode_post, run_phase
from procs import Server, cpu_seconds, free_port, start, stop
from sqlalchemy import Table, event, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from temp_postgres import temporary_database

from core.agents import AgentRegistry
from core.audit.chain import entry_hash, verify_chain
from core.audit.checkpoints import CHECKPOINT_ACTOR, checkpoint_data, sign_checkpoint
from core.audit.events import AuditKind
from core.canonical import canonical_json
from core.credentials import JwtIssuer
from core.keys import KeyRing
from core.model import ActionClass, Intent, Status
from core.policy import PolicyHolder
from core.service import Stepup
from core.storage.audit_store import chain_snapshot, iter_entries, read_head
from core.storage.database import Database
from core.storage.tables import (
    AuditHeadRow,
    AuditRow,
    CredentialRow,
    RequestRow,
    RevocationRow,
)

ISSUER = "https://stepup.bench"
GOAL = 0.10  # B within 10 % of A: rate ratio >= 0.90, p99 ratio <= 1.10
CHECKPOINT_EVERY = 1000  # STEPUP_AUDIT_CHECKPOINT_ENTRIES' default
BLOCK = 1000  # requests whose entries are interleaved (and inserted) together
AGENTS = 8
DAYS = 90
# Long windows so that nothing the bench submits expires during the run: expiries would be
# work in one server and not the other at moments that have nothing to do with history.
POLICY = """\
version: 1
defaults: { approval_timeout: 2h, claim_window: 2h, max_ttl: 1h }
approver_groups:
  sre-leads:
    slack_users: [U0ALICE, U0BOB]
channels:
  approvals: C0APPROVALS
rules:
  - name: reads
    match: { action_class: read }
    decision: allow
    tier: low
  - name: prod-writes
    match: { environment: production, action_class: write }
    decision: approve
    tier: high
    approvers: sre-leads
    quorum: 1
    channel: approvals
"""
INTENT = {
    "action": "db.query",
    "action_class": "read",
    "target": "orders-db",
    "environment": "production",
    "justification": "growth_bench: a pre-authorised read",
    "parameters": {"query": "select count(*) from orders", "limit": 100},
}
PENDING_INTENT = INTENT | {
    "action": "db.migrate",
    "action_class": "write",
    "justification": "growth_bench: a write that needs a human",
}
# (status, share): terminal statuses dominate a deployment's history.
STATUSES = [
    (Status.COMPLETED, 0.45),
    (Status.EXPIRED, 0.18),
    (Status.DENIED, 0.12),
    (Status.REVOKED, 0.10),
    (Status.CANCELLED, 0.06),
    (Status.PENDING, 0.03),
    (Status.APPROVED, 0.03),
    (Status.ACTIVE, 0.03),
]
LAST_KIND = {
    Status.COMPLETED: AuditKind.SESSION_COMPLETED,
    Status.EXPIRED: AuditKind.REQUEST_EXPIRED,
    Status.DENIED: AuditKind.REQUEST_DENIED,
    Status.REVOKED: AuditKind.CREDENTIAL_REVOKED,
    Status.CANCELLED: AuditKind.REQUEST_CANCELLED,
    Status.PENDING: AuditKind.REQUEST_ESCALATED,
    Status.APPROVED: AuditKind.REQUEST_APPROVED,
    Status.ACTIVE: AuditKind.CREDENTIAL_ISSUED,
}
CLAIMED = {Status.COMPLETED, Status.REVOKED, Status.ACTIVE}
ACTIONS = [
    ("db.query", "read", "orders-db"),
    ("db.query", "read", "billing-db"),
    ("k8s.rollout_restart", "write", "payments-api"),
    ("s3.get_object", "read", "reports-bucket"),
    ("db.migrate", "write", "orders-db"),
    ("secrets.read", "secret_read", "vault/payments"),
]
ENVIRONMENTS = ["production", "staging", "dev"]

_REQUESTS = cast(Table, RequestRow.__table__)
_CREDENTIALS = cast(Table, CredentialRow.__table__)
_REVOCATIONS = cast(Table, RevocationRow.__table__)
_AUDIT = cast(Table, AuditRow.__table__)
_HEAD = cast(Table, AuditHeadRow.__table__)


# ---------------------------------------------------------------------------------------------
# setup and history


@dataclass
class Prepared:
    name: str  # "empty" or "history"
    url: str
    workdir: Path
    env: dict[str, str]
    port: int
    key: str
    requests: int
    audit_entries: int
    build_seconds: float


def service_for(url: str, workdir: Path) -> Stepup:
    keyring = KeyRing.load_or_create(workdir / "keys")  # the server's own keys
    issuer = JwtIssuer(keyring, issuer_url=ISSUER)
    policy = PolicyHolder.from_file(workdir / "policy.yaml")
    return Stepup(Database(url), policy, keyring, issuer, issuer_url=ISSUER)


def prepare(
    name: str, url: str, workdir: Path, *, history: int, per_request: int, seed: int
) -> Prepared:
    """Migrate, register the agents, submit the template; then write ``history`` requests."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.yaml").write_text(POLICY)
    port = free_port()
    env = server_env(url, workdir, port)
    env.update(
        STEPUP_POLICY_FILE=str(workdir / "policy.yaml"),
        # On, but out of reach: their queries run on every submit as in production.
        STEPUP_SUBMIT_RATE_PER_AGENT="1000000",
        STEPUP_MAX_PENDING_PER_AGENT="1000000",
        **CLOSED_LOOP_ADMISSION,  # the closed loop bounds what is in flight itself
    )
    key = register_agent(str(Path(sys.executable).parent / "stepup"), env, workdir)
    service = service_for(url, workdir)
    db = service.db
    try:
        now = datetime.now(UTC)
        registry = AgentRegistry(service)
        agent = registry.authenticate(key, now=now)
        agents = [agent.id]
        for i in range(1, AGENTS):
            agent_id = f"agent-{i}"
            registry.add(agent_id, f"team-{i}@example.com", by="growth_bench", now=now)
            agents.append(agent_id)
        intent = Intent(
            agent=agent.id,
            action=str(INTENT["action"]),
            action_class=ActionClass.READ,
            target=str(INTENT["target"]),
            environment=str(INTENT["environment"]),
            justification=str(INTENT["justification"]),
            parameters={"query": "select 1", "limit": 1},
        )
        template, _ = service.submit(agent, intent, now=now)
        if history:
            write_history(db, service.keyring, template.id, agents, history, per_request, seed=seed)
        with db.read() as session:
            requests = session.execute(select(func.count()).select_from(_REQUESTS)).scalar_one()
            entries = session.execute(select(func.count()).select_from(_AUDIT)).scalar_one()
        if db.is_sqlite:
            with db.engine.connect() as conn:  # an old database's WAL has been checkpointed
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum does after a load
        if history:
            verify_history(db)
    finally:
        db.dispose()
    return Prepared(
        name, url, workdir, env, port, key, requests, entries, time.perf_counter() - started
    )


def _digest(text_: str) -> str:
    return "sha256:" + hashlib.sha256(text_.encode()).hexdigest()


def write_history(
    db: Database,
    keyring: KeyRing,
    template_id: str,
    agents: list[str],
    count: int,
    per_request: int,
    *,
    seed: int,
) -> None:
    """``count`` requests and ``per_request`` audit entries each, chained onto the head."""
    rng = random.Random(seed)
    with db.read() as session:
        request = dict(
            session.execute(select(_REQUESTS).where(_REQUESTS.c.id == template_id)).mappings().one()
        )
        own = {
            row.kind: row.data
            for row in session.execute(
                select(_AUDIT.c.kind, _AUDIT.c.data).where(_AUDIT.c.request_id == template_id)
            )
        }
        seq, prev_hash = read_head(session)
    submitted = own[AuditKind.INTENT_SUBMITTED.value]
    decided = own[AuditKind.POLICY_DECIDED.value]
    statuses = [s for s, _ in STATUSES]
    weights = [w for _, w in STATUSES]
    now = datetime.now(UTC)
    first = now - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / count
    signed_decision = keyring.sign({"bench": "decision", "n": 0}, typ="stepup-decision+jwt")
    for block_start in range(0, count, BLOCK):
        requests: list[dict[str, Any]] = []
        credentials: list[dict[str, Any]] = []
        revocations: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        for i in range(block_start, min(count, block_start + BLOCK)):
            status = rng.choices(statuses, weights)[0]
            agent_id = agents[i % len(agents)]
            action, action_class, target = ACTIONS[i % len(ACTIONS)]
            environment = ENVIRONMENTS[i % 7 % len(ENVIRONMENTS)]
            created = first + step * i
            live = status in (Status.PENDING, Status.APPROVED, Status.ACTIVE)
            if live:  # still open: deadlines hours ahead, so nothing falls due during the run
                created = now - timedelta(minutes=rng.uniform(1, 30))
            decided_at = created + timedelta(seconds=rng.uniform(0.01, 600))
            ended = decided_at + timedelta(seconds=rng.uniform(1, 900))
            request_id = "req_" + uuid.UUID(int=rng.getrandbits(128)).hex
            parameters = canonical_json({"query": f"select * from t{i % 97}", "n": i})
            jti = uuid.UUID(int=rng.getrandbits(128)).hex if status in CLAIMED else None
            credential_expires = decided_at + timedelta(minutes=15)
            if status is Status.ACTIVE:
                credential_expires = now + timedelta(hours=3)
            requests.append(
                request
                | {
                    "id": request_id,
                    "agent_id": agent_id,
                    "owner_email": f"team-{i % len(agents)}@example.com",
                    "status": status.value,
                    "version": 1 if status is Status.PENDING else 3,
                    "action": action,
                    "action_class": action_class,
                    "target": target,
                    "environment": environment,
                    "parameters": parameters,
                    "parameters_digest": _digest(parameters),
                    "created_at": created,
                    "updated_at": created if live else ended,
                    "decided_at": None if status is Status.PENDING else decided_at,
                    "expires_at": (
                        now + timedelta(hours=3)
                        if status in (Status.PENDING, Status.APPROVED)
                        else created + timedelta(minutes=30)
                    ),
                    "credential_jti": jti,
                    "credential_expires_at": credential_expires if jti else None,
                    "outcome": "succeeded" if status is Status.COMPLETED else None,
                    "status_reason": None if live else f"{status.value} (history)",
                    "idempotency_key": f"idem-{i}" if i % 10 < 3 else None,
                    "body_digest": _digest(f"body-{i}") if i % 10 < 3 else None,
                    "next_escalation_at": None,
                }
            )
            if jti is not None:
                revoked = status is not Status.ACTIVE
                credentials.append(
                    {
                        "jti": jti,
                        "request_id": request_id,
                        "agent_id": agent_id,
                        "scope": f"{action}:{target}",
                        "audience": target,
                        "issued_at": decided_at,
                        "expires_at": credential_expires,
                        "revoked_at": ended if revoked else None,
                        "revoke_reason": f"{status.value}" if revoked else None,
                    }
                )
                if revoked:
                    revocations.append(
                        {
                            "jti": jti,
                            "request_id": request_id,
                            "status": "done",
                            "attempts": 1,
                            "next_attempt_at": ended,
                            "created_at": ended,
                            "done_at": ended,
                        }
                    )
            swap = (template_id, request_id)
            kinds = [
                (created, AuditKind.INTENT_SUBMITTED.value, agent_id, submitted),
                (created, AuditKind.POLICY_DECIDED.value, None, decided),
            ]
            last = LAST_KIND[status]
            data = canonical_json(
                {"status": status.value, "reason": f"{status.value} (history)"}
                | ({"signed_decision": signed_decision} if status is Status.DENIED else {})
                | ({"jti": jti} if jti else {})
            )
            kinds.append((ended, last.value, "stepup", data))
            for _ in range(3, per_request):  # more per request when asked for
                kinds.append((ended, AuditKind.REQUEST_ESCALATED.value, "stepup", data))
            for at, kind, actor, raw in kinds[:per_request]:
                entries.append(
                    {
                        "at": at,
                        "kind": kind,
                        "request_id": request_id,
                        "actor": actor,
                        "data": raw.replace(*swap).replace('"bench-bot"', f'"{agent_id}"'),
                    }
                )
        entries.sort(key=lambda e: e["at"])  # the requests of a block interleave
        chained: list[dict[str, Any]] = []
        for entry in entries:
            seq += 1
            digest = entry_hash(seq=seq, prev_hash=prev_hash, **entry)
            chained.append(entry | {"seq": seq, "prev_hash": prev_hash, "hash": digest})
            prev_hash = digest
            if seq % CHECKPOINT_EVERY == 0:
                checkpoint = sign_checkpoint(keyring, seq=seq, hash=prev_hash, at=entry["at"])
                row: dict[str, Any] = {
                    "at": checkpoint.at,
                    "kind": AuditKind.AUDIT_CHECKPOINT.value,
                    "request_id": None,
                    "actor": CHECKPOINT_ACTOR,
                    "data": canonical_json(checkpoint_data(checkpoint)),
                }
                seq += 1
                digest = entry_hash(seq=seq, prev_hash=prev_hash, **row)
                chained.append(row | {"seq": seq, "prev_hash": prev_hash, "hash": digest})
                prev_hash = digest
        with db.write() as session:
            session.execute(insert(_REQUESTS), requests)
            if credentials:
                session.execute(insert(_CREDENTIALS), credentials)
            if revocations:
                session.execute(insert(_REVOCATIONS), revocations)
            session.execute(insert(_AUDIT), chained)
            session.execute(update(_HEAD).where(_HEAD.c.id == 1).values(seq=seq, hash=prev_hash))
        done = min(count, block_start + BLOCK)
        if done % 50_000 == 0 or done == count:
            print(f"    {done:,} requests, audit head at {seq:,}", flush=True)


def verify_history(db: Database) -> None:
    """The generated log is a chain `stepup audit verify` accepts (hashes and head)."""
    started = time.perf_counter()
    with chain_snapshot(db) as session:
        report = verify_chain(iter_entries(session), head=read_head(session))
    print(
        f"    chain verified: {report.entries:,} entries, head {report.head_seq:,} "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# the A/B rounds


@dataclass
class Row:
    db: str
    target: str  # empty | history
    round: int
    requests: int
    errors: int
    rate: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float


def load(server: Server, request: bytes, total: int, concurrency: int) -> PhaseResult:
    result = asyncio.run(
        run_phase(server.port, request, total=total, concurrency=concurrency, expect=201)
    )
    if result.requests == 0 or result.errors >= 100:
        raise RuntimeError(f"{server.name}: {result.errors} errors, {dict(result.statuses)}")
    return result


def measure(
    server: Server, request: bytes, db: str, round_no: int, args: argparse.Namespace
) -> Row:
    load(server, request, args.warmup, args.concurrency)
    cpu_before = cpu_seconds(server.pid)
    result = load(server, request, args.requests, args.concurrency)
    cpu = cpu_seconds(server.pid) - cpu_before
    return Row(
        db,
        server.name,
        round_no,
        result.requests,
        result.errors,
        result.rate,
        result.percentile_ms(50),
        result.percentile_ms(99),
        cpu / max(result.requests, 1) * 1000,
    )


def print_row(row: Row, ratio: tuple[float, float] | None) -> None:
    tail = f"   B/A rate {ratio[0]:.2f}, p99 {ratio[1]:.2f}" if ratio else ""
    errors = f" ({row.errors} errors)" if row.errors else ""
    print(
        f"  round {row.round:>2} {row.target:<8} {row.requests:>6} req {row.rate:>7.0f}/s "
        f"p50 {row.p50_ms:>6.1f} ms  p99 {row.p99_ms:>6.1f} ms  "
        f"CPU {row.server_cpu_ms:>5.2f} ms/req{errors}{tail}",
        flush=True,
    )


def rounds(
    kind: str, servers: dict[str, Server], requests: dict[str, bytes], args: argparse.Namespace
) -> list[Row]:
    rows: list[Row] = []
    for round_no in range(1, args.rounds + 1):
        order = ["empty", "history"] if round_no % 2 == 1 else ["history", "empty"]
        pair = {}
        for name in order:
            pair[name] = measure(servers[name], requests[name], kind, round_no, args)
        ratio = (
            pair["history"].rate / pair["empty"].rate,
            pair["history"].p99_ms / pair["empty"].p99_ms,
        )
        for i, name in enumerate(order):
            print_row(pair[name], ratio if i == 1 else None)
            rows.append(pair[name])
    return rows


# ---------------------------------------------------------------------------------------------
# EXPLAIN of the statements of one submit and one sweep, on the history database


BIG_TABLES = ("requests", "audit_log", "credentials", "revocations", "outbox")


@dataclass
class Plan:
    path: str  # submit | sweep
    sql: str
    plan: list[str]
    scans: list[str]  # the plan lines that read a whole table of those that grow
    params: Any = None  # as captured (DBAPI form)
    history_us: float = float("nan")  # median time of the statement on the history database
    empty_us: float = float("nan")  # the same statement on the empty one


def capture(conn_source: Any, work: Any) -> list[tuple[str, Any]]:
    """Run ``work()`` and return the (statement, parameters) the engine sent meanwhile."""
    seen: list[tuple[str, Any]] = []

    def record(
        _conn: Connection, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        seen.append((statement, parameters[0] if many and parameters else parameters))

    event.listen(conn_source, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(conn_source, "before_cursor_execute", record)
    return seen


def explain(db: Database, path: str, statements: list[tuple[str, Any]]) -> list[Plan]:
    plans: list[Plan] = []
    seen: set[str] = set()
    for sql, params in statements:
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if head not in ("SELECT", "UPDATE", "DELETE", "WITH") or sql in seen:
            continue
        if "pg_notify" in sql or sql.strip().upper() == "SELECT 1":
            continue
        seen.add(sql)
        prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
        with db.engine.connect() as conn:
            result = conn.exec_driver_sql(prefix + sql, params if params else ())
            if db.is_sqlite:
                lines = [str(row[-1]) for row in result]
                scans = [
                    line
                    for line in lines
                    if any(line.startswith(f"SCAN {table}") for table in BIG_TABLES)
                ]
            else:
                lines = [str(row[0]) for row in result]
                scans = [
                    line.strip()
                    for line in lines
                    if any(f"Seq Scan on {table} " in line + " " for table in BIG_TABLES)
                ]
            conn.rollback()
        plans.append(Plan(path, " ".join(sql.split()), lines, scans, params))
    return plans


def time_statement(db: Database, sql: str, params: Any, reps: int) -> float:
    """Median microseconds of a read-only statement, in a transaction rolled back after."""
    samples = []
    with db.engine.connect() as conn:
        conn.exec_driver_sql(sql, params if params else ()).fetchall()  # warm
        for _ in range(reps):
            started = time.perf_counter()
            conn.exec_driver_sql(sql, params if params else ()).fetchall()
            samples.append((time.perf_counter() - started) * 1e6)
        conn.rollback()
    return statistics.median(samples)


def time_plans(plans: list[Plan], history_url: str, empty_url: str) -> None:
    """Each captured SELECT timed on both databases, alternately three times (the best of
    the three medians is kept: the machine's noise only ever adds). The same text and
    parameters on both: the agent is bench-bot in both; a key hash matches only in B."""
    history, empty = Database(history_url), Database(empty_url)
    try:
        for plan in plans:
            if not plan.sql.upper().startswith(("SELECT", "WITH")):
                continue
            h, e = [], []
            for _ in range(3):
                h.append(time_statement(history, plan.sql, plan.params, 15))
                e.append(time_statement(empty, plan.sql, plan.params, 15))
            plan.history_us, plan.empty_us = min(h), min(e)
    finally:
        history.dispose()
        empty.dispose()


def runtime_for(prepared: Prepared) -> Any:
    """The server's runtime (``bot.server.build_runtime``) in this process, not started, with
    the settings the bench's server had."""
    from bot.server import build_runtime
    from bot.settings import Settings

    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(prepared.env)
    try:
        return build_runtime(Settings(_env_file=None))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def explain_history(prepared: Prepared) -> list[Plan]:
    """EXPLAIN what one submit (through the real app) and one scheduler sweep execute."""
    from fastapi.testclient import TestClient

    from bot.scheduler import DeadlineScheduler

    runtime = runtime_for(prepared)
    service = runtime.context.service
    headers = {"Authorization": f"Bearer {prepared.key}"}
    plans: list[Plan] = []
    try:
        with TestClient(runtime.app) as client:
            for body in (INTENT, PENDING_INTENT):
                for _ in range(2):  # caches warm: the second submit is the steady state
                    statements = capture(
                        service.db.engine,
                        lambda body=body: client.post(
                            "/v1/requests", json=body, headers=headers
                        ).raise_for_status(),
                    )
                label = "submit (allowed)" if body is INTENT else "submit (pending)"
                plans += explain(service.db, label, statements)
        sweep = DeadlineScheduler(service)  # not started: one sweep called directly
        plans += explain(service.db, "sweep", capture(service.db.engine, sweep.sweep))
    finally:
        service.db.dispose()
    return plans


@dataclass
class Profile:
    """In-process submits through the real app on both databases: time per submit, and the
    time of each statement (cursor execute to its return), alternately in blocks."""

    submits: dict[str, int]
    wall_us: dict[str, float]  # total, per database
    statements: dict[str, dict[str, list[float]]]  # sql -> database -> [calls, total µs]
    notes: list[str]
    commits: dict[str, list[float]] = field(default_factory=dict)  # µs, each COMMIT


def profile_submits(prepared: dict[str, Prepared], *, blocks: int, per_block: int) -> Profile:
    from fastapi.testclient import TestClient

    runtimes = {name: runtime_for(p) for name, p in prepared.items()}
    profile = Profile(dict.fromkeys(runtimes, 0), dict.fromkeys(runtimes, 0.0), {}, [])
    hooks = []
    names = {id(r.context.service.db.engine): n for n, r in runtimes.items()}
    commit_started = threading.local()

    def on_commit(_conn: Connection) -> None:  # just before the DBAPI commit
        commit_started.at = time.perf_counter()

    def after_commit(session: Session) -> None:  # just after it
        started = getattr(commit_started, "at", None)
        bind = session.get_bind()  # the write session is bound to a connection
        name = names.get(id(getattr(bind, "engine", bind)))
        if started is not None and name is not None:
            took = (time.perf_counter() - started) * 1e6
            profile.commits.setdefault(name, []).append(took)
        commit_started.at = None

    for name, runtime in runtimes.items():
        engine = runtime.context.service.db.engine

        def before(conn: Connection, *_args: Any) -> None:
            conn.info["growth_t0"] = time.perf_counter()

        def after(conn: Connection, _cursor: Any, sql: str, *_args: Any, _name: str = name) -> None:
            took = (time.perf_counter() - conn.info.pop("growth_t0", time.perf_counter())) * 1e6
            calls = profile.statements.setdefault(" ".join(sql.split()), {})
            entry = calls.setdefault(_name, [0.0, 0.0])
            entry[0] += 1
            entry[1] += took

        hooks.append((engine, before, after))
        if runtime.context.service.db.is_sqlite:
            with engine.connect() as conn:
                size = conn.exec_driver_sql("PRAGMA cache_size").scalar()
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
            profile.notes.append(f"{name}: PRAGMA cache_size {size}, {pages:,} pages of 4 KiB")
    clients = {}
    with ExitStack() as stack:
        for name, runtime in runtimes.items():
            clients[name] = stack.enter_context(TestClient(runtime.app))
            headers = {"Authorization": f"Bearer {prepared[name].key}"}
            clients[name].headers.update(headers)
            for _ in range(50):  # warm-up, not recorded
                clients[name].post("/v1/requests", json=INTENT).raise_for_status()
        for engine, before, after in hooks:
            event.listen(engine, "before_cursor_execute", before)
            event.listen(engine, "after_cursor_execute", after)
            event.listen(engine, "commit", on_commit)
        event.listen(Session, "after_commit", after_commit)
        try:
            for block in range(blocks):
                order = list(runtimes) if block % 2 == 0 else list(runtimes)[::-1]
                for name in order:
                    started = time.perf_counter()
                    for _ in range(per_block):
                        clients[name].post("/v1/requests", json=INTENT).raise_for_status()
                    profile.wall_us[name] += (time.perf_counter() - started) * 1e6
                    profile.submits[name] += per_block
        finally:
            for engine, before, after in hooks:
                event.remove(engine, "before_cursor_execute", before)
                event.remove(engine, "after_cursor_execute", after)
                event.remove(engine, "commit", on_commit)
            event.remove(Session, "after_commit", after_commit)
    for runtime in runtimes.values():
        runtime.context.service.db.dispose()
    return profile


def print_profile(kind: str, profile: Profile) -> None:
    a, b = "empty", "history"
    per = {n: profile.wall_us[n] / max(profile.submits[n], 1) for n in profile.submits}
    print(
        f"\n  in-process submits on {kind} ({profile.submits[a]:,} each, alternating blocks, "
        f"one client): {per[a]:.0f} µs empty, {per[b]:.0f} µs history "
        f"(B/A {per[b] / per[a]:.2f})"
    )
    for note in profile.notes:
        print(f"    {note}")
    for name in (a, b):
        commits = sorted(profile.commits.get(name, []))
        if commits:
            total = sum(commits) / max(profile.submits[name], 1)
            print(
                f"    COMMIT on {name}: {len(commits):,}, median {statistics.median(commits):.0f} "
                f"µs, p99 {commits[int(0.99 * (len(commits) - 1))]:.0f} µs, max "
                f"{commits[-1]:.0f} µs, {total:.0f} µs per submit"
            )

    def cost(sql: str, name: str) -> float:  # µs per submit
        _calls, total = profile.statements[sql].get(name, [0.0, 0.0])
        return total / max(profile.submits[name], 1)

    rows = sorted(profile.statements, key=lambda q: cost(q, b) - cost(q, a), reverse=True)
    statement_a = sum(cost(q, a) for q in profile.statements)
    statement_b = sum(cost(q, b) for q in profile.statements)
    print(
        f"    statements: {statement_a:.0f} µs per submit empty, {statement_b:.0f} µs history; "
        "the rest is Python, commit and the test client. Largest differences (µs per submit):"
    )
    for sql in rows[:6]:
        calls = profile.statements[sql].get(b, [0.0])[0] / max(profile.submits[b], 1)
        print(
            f"    {cost(sql, a):>7.0f} {cost(sql, b):>7.0f}  ({calls:.1f} calls/submit) {sql[:150]}"
        )


def slower(plan: Plan) -> bool:
    """Costs more on the history database: twice the time and 100 µs more, at least."""
    return plan.history_us > 2 * plan.empty_us and plan.history_us - plan.empty_us > 100


def print_plans(kind: str, plans: list[Plan], verbose: bool) -> None:
    flagged = [p for p in plans if p.scans or slower(p)]
    paths = ", ".join(f"{n} {path}" for path, n in Counter(p.path for p in plans).items())
    print(
        f"\n  EXPLAIN on the {kind} history database: {len(plans)} distinct statements "
        f"({paths}); {len(flagged)} scan a growing table or take over twice as long as on "
        "the empty database (reads timed on both, median µs)"
    )
    for p in plans if verbose else flagged:
        mark = "SCAN" if p.scans else "SLOW" if slower(p) else "ok  "
        timing = (
            f" [{p.history_us:.0f} µs vs {p.empty_us:.0f} µs empty]"
            if p.history_us == p.history_us
            else ""
        )
        print(f"  [{mark}] {p.path}{timing}: {p.sql[:300]}")
        for line in p.plan:
            print(f"           {line}")


# ---------------------------------------------------------------------------------------------


@contextmanager
def scratch(kind: str, workdir: Path, admin_url: str, name: str) -> Iterator[str]:
    if kind == "sqlite":
        workdir.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    with temporary_database(admin_url, f"stepup_growth_{name}") as url:
        yield url


def bench_database(
    kind: str, root: Path, args: argparse.Namespace
) -> tuple[list[Row], list[Plan], dict[str, Prepared], Profile | None]:
    stepup_cli = str(Path(sys.executable).parent / "stepup")
    body = json.dumps(INTENT).encode()
    with ExitStack() as stack:
        prepared: dict[str, Prepared] = {}
        # --control: B gets no history either (A/A'), to see the bench's own spread and bias.
        for name, history in (("empty", 0), ("history", 0 if args.control else args.history)):
            workdir = root / kind / name
            url = stack.enter_context(scratch(kind, workdir, args.postgres_admin_url, name))
            print(f"  preparing {name} ({history:,} requests of history) ...", flush=True)
            prepared[name] = p = prepare(
                name,
                url,
                workdir,
                history=history,
                per_request=args.audit_per_request,
                seed=args.seed,
            )
            print(
                f"    {name}: {p.requests:,} requests, {p.audit_entries:,} audit entries "
                f"({p.build_seconds:.0f} s)",
                flush=True,
            )
        servers: dict[str, Server] = {}
        requests: dict[str, bytes] = {}
        for name, p in prepared.items():
            server = start(name, [stepup_cli, "serve"], port=p.port, env=p.env, cwd=p.workdir)
            stack.callback(stop, server)
            headers = {"Authorization": f"Bearer {p.key}"}
            check_once(p.port, "/v1/requests", body, headers)
            servers[name] = server
            requests[name] = encode_post("/v1/requests", port=p.port, body=body, headers=headers)
        baseline = {name: table_stats(p.url) for name, p in prepared.items()}
        rows = rounds(kind, servers, requests, args)
        for server in servers.values():
            stop(server)
        print_table_stats(prepared, baseline)
        plans = explain_history(prepared["history"]) if args.explain else []
        time_plans(plans, prepared["history"].url, prepared["empty"].url)
        profile = (
            profile_submits(prepared, blocks=args.profile_blocks, per_block=args.profile_submits)
            if args.profile_blocks > 0
            else None
        )
    return rows, plans, prepared, profile


def table_stats(url: str) -> dict[str, tuple[int, ...]]:
    """PostgreSQL's counters per table (seq scans, rows they read, index scans, rows fetched
    by them, rows inserted); empty on SQLite, which keeps none."""
    db = Database(url)
    try:
        if db.is_sqlite:
            return {}
        with db.engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            rows = conn.exec_driver_sql(
                "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), "
                "coalesce(idx_tup_fetch, 0), n_tup_ins FROM pg_stat_user_tables"
            ).all()
        return {str(r[0]): tuple(int(v) for v in r[1:]) for r in rows}
    finally:
        db.dispose()


def print_table_stats(
    prepared: dict[str, Prepared], baseline: dict[str, dict[str, tuple[int, ...]]]
) -> None:
    """What the servers' work read from each table during the rounds, on A and on B."""
    time.sleep(1)  # the statistics collector reports with a little delay
    after = {name: table_stats(p.url) for name, p in prepared.items()}
    if not any(after.values()):
        return
    print("  table reads during the rounds (PostgreSQL counters, A = empty / B = history):")
    print(
        f"    {'table':<22} {'seq scans':>13} {'rows seq-read':>23} "
        f"{'idx scans':>15} {'rows idx-fetched':>21}"
    )
    for table in sorted(after["history"]):
        cells = []
        for i in range(4):
            a = after["empty"].get(table, (0,) * 5)[i] - baseline["empty"].get(table, (0,) * 5)[i]
            b = after["history"][table][i] - baseline["history"].get(table, (0,) * 5)[i]
            cells.append(f"{a:,} / {b:,}")
        if any(c != "0 / 0" for c in cells):
            print(f"    {table:<22} {cells[0]:>13} {cells[1]:>23} {cells[2]:>15} {cells[3]:>21}")


def summarise(kind: str, rows: list[Row], prepared: dict[str, Prepared]) -> bool | None:
    if not rows:
        print(f"\n  {kind}: no rounds (--rounds 0)")
        return None
    by_round: dict[int, dict[str, Row]] = {}
    for row in rows:
        by_round.setdefault(row.round, {})[row.target] = row
    rate_ratios = [r["history"].rate / r["empty"].rate for r in by_round.values()]
    p99_ratios = [r["history"].p99_ms / r["empty"].p99_ms for r in by_round.values()]
    rate, p99 = statistics.median(rate_ratios), statistics.median(p99_ratios)
    met = rate >= 1 - GOAL and p99 <= 1 + GOAL

    def med(target: str, attr: str) -> float:
        return statistics.median(float(getattr(r, attr)) for r in rows if r.target == target)

    h = prepared["history"]
    print(
        f"\n  {kind}: empty {med('empty', 'rate'):.0f} req/s p99 {med('empty', 'p99_ms'):.1f} ms"
        f" | history ({h.requests:,} requests, {h.audit_entries:,} entries) "
        f"{med('history', 'rate'):.0f} req/s p99 {med('history', 'p99_ms'):.1f} ms"
    )
    print(
        f"  {kind}: B/A median of {len(rate_ratios)} rounds: rate {rate:.2f} "
        f"({', '.join(f'{x:.2f}' for x in rate_ratios)}), p99 {p99:.2f} "
        f"({', '.join(f'{x:.2f}' for x in p99_ratios)}): within {GOAL:.0%} "
        + ("MET" if met else "MISSED")
    )
    return met


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dbs", default="sqlite,postgres", help="comma-separated list")
    parser.add_argument("--history", type=int, help="requests of history (200,000)")
    parser.add_argument("--audit-per-request", type=int, default=3, help="entries per request")
    parser.add_argument("--rounds", type=int, help="A/B pairs per database (6; --quick 2)")
    parser.add_argument("--requests", type=int, help="timed per phase (4,000; --quick 1,000)")
    parser.add_argument("--warmup", type=int, help="untimed per phase first (300; --quick 200)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument(
        "--control", action="store_true", help="B empty too: the A/A spread, no history"
    )
    parser.add_argument("--no-explain", dest="explain", action="store_false")
    parser.add_argument("--profile-blocks", type=int, default=6, help="0: no in-process profile")
    parser.add_argument("--profile-submits", type=int, default=200, help="submits per block")
    parser.add_argument("--verbose-plans", action="store_true", help="print every plan")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "STEPUP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="20,000 requests, 2 short rounds")
    args = parser.parse_args()
    defaults = (
        {"history": 20_000, "rounds": 2, "requests": 1000, "warmup": 200}
        if args.quick
        else {"history": 200_000, "rounds": 6, "requests": 4000, "warmup": 300}
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.requests, args.warmup, args.concurrency) < 1 or args.rounds < 0:
        parser.error("sizes must be at least 1 (--rounds 0: EXPLAIN and profile only)")
    if args.history < 0 or not 2 <= args.audit_per_request <= 10:
        parser.error("--history >= 0, --audit-per-request between 2 and 10")
    args.dbs = [name.strip() for name in args.dbs.split(",") if name.strip()]
    unknown = set(args.dbs) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = parse_args()
    what = (
        "control: two empty databases (B gets no history)"
        if args.control
        else f"{args.history:,} requests and {args.history * args.audit_per_request:,} "
        "audit entries vs empty"
    )
    print(
        f"growth bench: {what}; {args.rounds} rounds of {args.requests} submits after "
        f"{args.warmup} warm-up, {args.concurrency} clients; {os.cpu_count()} CPUs, load "
        f"average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    verdicts: dict[str, bool | None] = {}
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stepup-growth-bench-") as tmp:
        for kind in args.dbs:
            print(f"\n[{kind}]")
            reason = postgres_unreachable(args.postgres_admin_url) if kind == "postgres" else None
            if reason is not None:
                print(f"  skipped: {reason}")
                continue
            rows, plans, prepared, profile = bench_database(kind, Path(tmp), args)
            verdicts[kind] = summarise(kind, rows, prepared)
            print_plans(kind, plans, args.verbose_plans)
            if profile is not None:
                print_profile(kind, profile)
            figures[kind] = {
                "rows": [asdict(r) for r in rows],
                "plans": [asdict(p) for p in plans],
                "sizes": {n: [p.requests, p.audit_entries] for n, p in prepared.items()},
            }
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        "verdict: "
        + "; ".join(
            f"{k}: {'within' if v else 'NOT within'} {GOAL:.0%}"
            for k, v in verdicts.items()
            if v is not None
        )
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
