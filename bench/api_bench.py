"""Agent API throughput: stepup's submit against a bare FastAPI + SQLAlchemy insert (the floor).

Both servers run as separate processes on loopback, on the same database (a temp SQLite file,
or a scratch PostgreSQL database created and dropped here); one asyncio process drives
``--concurrency`` keep-alive clients. Then the stepup server takes ``--rss-requests`` more
submissions while its RSS is sampled, to show whether memory grows with requests served.

    .venv/bin/python bench/api_bench.py              # ~15 min on 2 cores, most of it the RSS phase
    .venv/bin/python bench/api_bench.py --quick      # ~2 min
    .venv/bin/python bench/api_bench.py --dbs sqlite --rss-requests 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from loadgen import PhaseResult, encode_post, run_phase
from procs import Server, cpu_seconds, free_port, machine_jiffies, rss_mib, start, stop
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from temp_postgres import temporary_database

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
POLICY = ROOT / "manifests" / "policy.example.yaml"
GOAL = 0.5
RSS_FLAT_MIB_PER_10K = 2.0  # more growth than this per 10,000 requests is not a plateau
# Rule `reads` of the example policy: decision allow (pre-authorised, no human in the loop).
INTENT = {
    "action": "db.query",
    "action_class": "read",
    "target": "orders-db",
    "environment": "production",
    "justification": "api_bench: a pre-authorised read",
    "parameters": {"query": "select count(*) from orders", "limit": 100},
}


@dataclass
class Row:
    target: str
    db: str
    round: int
    requests: int
    errors: int
    rate: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float  # server process CPU per request
    client_cpu_ms: float  # generator CPU per request
    machine_busy: float  # cores busy on average during the phase, all processes
    other_busy: float  # of which neither the server nor the generator: the DB server, others
    ratio: float | None = None


@dataclass
class RssSample:
    db: str
    served: int  # submissions in the RSS phase so far
    rss_mib: float
    rate: float  # req/s of the chunk that ended here


# Sizes of a run; flags given on the command line win over either set.
FULL = {"requests": 5000, "warmup": 500, "rss_requests": 50_000, "rss_every": 10_000}
QUICK = {"requests": 1000, "warmup": 200, "rss_requests": 5000, "rss_every": 1000}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="stepup agent API throughput against a floor.")
    parser.add_argument("--dbs", default="sqlite,postgres", help="comma-separated list")
    parser.add_argument("--requests", type=int, help="timed requests per target (5000)")
    parser.add_argument("--warmup", type=int, help="untimed requests per target first (500)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1, help="floor/stepup pairs per database")
    parser.add_argument("--rss-requests", type=int, help="RSS phase length, 0 skips it (50000)")
    parser.add_argument("--rss-every", type=int, help="RSS sample interval (10000)")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "STEPUP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="where to CREATE and DROP the scratch database",
    )
    parser.add_argument(
        "--floor-threads",
        type=int,
        help="also measure the floor with this many worker threads (stepup's STEPUP_API_THREADS)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="sizes " + str(QUICK))
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.requests, args.warmup, args.concurrency, args.rounds, args.rss_every) < 1:
        parser.error("sizes must be at least 1 (only --rss-requests may be 0)")
    args.dbs = [name.strip() for name in args.dbs.split(",") if name.strip()]
    unknown = set(args.dbs) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))}")
    return args


@contextmanager
def scratch_database(kind: str, workdir: Path, admin_url: str) -> Iterator[str]:
    """A fresh database URL; a PostgreSQL one is created here and dropped on the way out."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    with temporary_database(admin_url, "stepup_bench") as url:
        yield url


# A closed loop holds at most --concurrency requests in flight by itself: admission control
# (503 past STEPUP_MAX_IN_FLIGHT, default 16) would shed the 50 clients' load instead of
# measuring how fast it is served. So the closed-loop benches (this one, identity_bench,
# growth_bench) raise the bound; openloop_bench.py takes it out again and measures shedding.
CLOSED_LOOP_ADMISSION = {"STEPUP_MAX_IN_FLIGHT": "1000"}


def server_env(url: str, workdir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    env.update(
        STEPUP_DATABASE_URL=url,
        STEPUP_POLICY_FILE=str(POLICY),
        STEPUP_KEYS_DIR=str(workdir / "keys"),
        STEPUP_PORT=str(port),
        STEPUP_LOG_LEVEL="WARNING",
        # One bench agent submits thousands a minute: the limits per agent would refuse it by
        # design (they have their own tests), so the bench measures the path with them off.
        STEPUP_SUBMIT_RATE_PER_AGENT="0",
        STEPUP_MAX_PENDING_PER_AGENT="0",
        **CLOSED_LOOP_ADMISSION,
    )
    return env


def register_agent(stepup_cli: str, env: dict[str, str], workdir: Path) -> str:
    argv = [stepup_cli, "agents", "add", "bench-bot", "--owner", "bench@example.com"]
    done = subprocess.run(
        argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"stepup agents add failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def check_once(port: int, path: str, body: bytes, headers: dict[str, str]) -> None:
    """One request outside the measurement: the submit must be pre-authorised (201, approved)."""
    url = f"http://127.0.0.1:{port}{path}"
    all_headers = {"Content-Type": "application/json", **headers}
    request = urllib.request.Request(url, data=body, method="POST", headers=all_headers)
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (our loopback URL)
        payload = json.loads(answer.read())
        if answer.status != 201 or payload.get("status", "approved") != "approved":
            raise RuntimeError(f"{path}: expected 201 approved, got {answer.status} {payload}")


def load(port: int, request: bytes, total: int, concurrency: int) -> PhaseResult:
    result = asyncio.run(run_phase(port, request, total=total, concurrency=concurrency, expect=201))
    if result.requests == 0 or result.errors >= 100:
        raise RuntimeError(
            f"load on port {port} failed: {result.errors} errors, {dict(result.statuses)}"
        )
    return result


def measure(
    server: Server, request: bytes, db: str, round_no: int, args: argparse.Namespace
) -> Row:
    load(server.port, request, args.warmup, args.concurrency)
    cpu_before, (busy_before, total_before) = cpu_seconds(server.pid), machine_jiffies()
    result = load(server.port, request, args.requests, args.concurrency)
    cpu_used = cpu_seconds(server.pid) - cpu_before
    busy_after, total_after = machine_jiffies()
    cores = os.cpu_count() or 1
    busy = cores * (busy_after - busy_before) / max(total_after - total_before, 1)
    served = max(result.requests, 1)
    return Row(
        target=server.name,
        db=db,
        round=round_no,
        requests=result.requests,
        errors=result.errors,
        rate=result.rate,
        p50_ms=result.percentile_ms(50),
        p99_ms=result.percentile_ms(99),
        server_cpu_ms=cpu_used / served * 1000,
        client_cpu_ms=result.client_cpu / served * 1000,
        machine_busy=busy,
        other_busy=busy - (cpu_used + result.client_cpu) / result.elapsed,
    )


def rss_phase(server: Server, request: bytes, db: str, args: argparse.Namespace) -> list[RssSample]:
    samples = [RssSample(db, 0, rss_mib(server.pid), 0.0)]
    print(f"  RSS phase ({db}): {args.rss_requests} submissions, sampled every {args.rss_every}")
    served = 0
    while served < args.rss_requests:
        chunk = min(args.rss_every, args.rss_requests - served)
        result = load(server.port, request, chunk, args.concurrency)
        served += chunk
        samples.append(RssSample(db, served, rss_mib(server.pid), result.rate))
        print(
            f"    after {served:>6}: RSS {samples[-1].rss_mib:7.1f} MiB  ({result.rate:6.0f} req/s)"
        )
    return samples


def row_counts(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            counts = {
                table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("requests", "audit_log", "bench_floor")
            }
    finally:
        engine.dispose()
    return ", ".join(f"{table} {count}" for table, count in counts.items())


def bench_database(
    kind: str, workdir: Path, args: argparse.Namespace
) -> tuple[list[Row], list[RssSample]]:
    stepup_cli = str(Path(sys.executable).parent / "stepup")
    body = json.dumps(INTENT).encode()
    rows: list[Row] = []
    samples: list[RssSample] = []
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(kind, workdir, args.postgres_admin_url))
        port, floor_port = free_port(), free_port()
        env = server_env(url, workdir, port)
        key = register_agent(stepup_cli, env, workdir)
        headers = {"Authorization": f"Bearer {key}"}
        stepup = start("stepup", [stepup_cli, "serve"], port=port, env=env, cwd=workdir)
        stack.callback(stop, stepup)
        floor_app = str(BENCH_DIR / "floor_app.py")
        floor_argv = [sys.executable, floor_app, "--database-url", url, "--port", str(floor_port)]
        floor = start("floor", floor_argv, port=floor_port, env=env, cwd=workdir)
        stack.callback(stop, floor)
        floor_t = None
        if args.floor_threads:
            port_t = free_port()
            argv_t = [*floor_argv[:-1], str(port_t), "--threads", str(args.floor_threads)]
            name_t = f"floor{args.floor_threads}t"
            floor_t = start(name_t, argv_t, port=port_t, env=env, cwd=workdir)
            stack.callback(stop, floor_t)
            floor_t_request = encode_post("/floor", port=port_t, body=body, headers=headers)
        check_once(port, "/v1/requests", body, headers)
        check_once(floor_port, "/floor", body, headers)
        stepup_request = encode_post("/v1/requests", port=port, body=body, headers=headers)
        floor_request = encode_post("/floor", port=floor_port, body=body, headers=headers)
        for round_no in range(1, args.rounds + 1):
            floor_row = measure(floor, floor_request, kind, round_no, args)
            stepup_row = measure(stepup, stepup_request, kind, round_no, args)
            stepup_row.ratio = stepup_row.rate / floor_row.rate
            round_rows = [floor_row, stepup_row]
            if floor_t is not None:
                # Informational: the floor on stepup's thread bound; its ratio column is
                # stepup's rate over this floor's (the goal is judged on the bare floor).
                floor_t_row = measure(floor_t, floor_t_request, kind, round_no, args)
                floor_t_row.ratio = stepup_row.rate / floor_t_row.rate
                round_rows.append(floor_t_row)
            rows += round_rows
            print_rows(round_rows, header=round_no == 1)
        if args.rss_requests > 0:
            samples = rss_phase(stepup, stepup_request, kind, args)
        print(f"  rows in {kind}: {row_counts(url)}")
        wal = workdir / "bench.db-wal"
        if wal.exists():
            print(f"  SQLite WAL at the end: {wal.stat().st_size / 2**20:.1f} MiB")
    return rows, samples


def print_rows(rows: list[Row], *, header: bool) -> None:
    if header:
        print(
            f"  {'target':<8} {'DB':<8} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'ratio':>6}   server CPU ms/req  gen CPU ms/req  busy cores (other)"
        )
    for row in rows:
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
        errors = f" ({row.errors} errors)" if row.errors else ""
        print(
            f"  {row.target:<8} {row.db:<8} {row.requests:>8} {row.rate:>7.0f} {row.p50_ms:>7.1f} "
            f"{row.p99_ms:>7.1f} {ratio:>6} {row.server_cpu_ms:>19.2f} {row.client_cpu_ms:>15.2f} "
            f"{row.machine_busy:>11.2f} ({row.other_busy:.2f}){errors}"
        )


def rss_verdict(series: list[RssSample]) -> str:
    """Growth from the first sample under load to the last, per 10,000 requests served."""
    if len(series) < 3:
        return "too few samples for a verdict (use --rss-every)"
    first, last = series[1], series[-1]
    growth = last.rss_mib - first.rss_mib
    per_10k = growth / (last.served - first.served) * 10_000
    flat = per_10k <= RSS_FLAT_MIB_PER_10K
    return (
        f"{series[0].rss_mib:.1f} MiB before, {first.rss_mib:.1f} MiB after {first.served}, "
        f"{last.rss_mib:.1f} MiB after {last.served} ({growth:+.1f} MiB, {per_10k:+.1f} MiB "
        f"per 10k requests): " + ("flat" if flat else "GROWS with requests served")
    )


def summarise(rows: list[Row], samples: list[RssSample]) -> None:
    print("\nSummary")
    print_rows(rows, header=True)
    for db in dict.fromkeys(r.db for r in rows):
        ratios = [r.ratio for r in rows if r.db == db and r.target == "stepup" and r.ratio]
        ratio = statistics.median(ratios)
        verdict = "meets" if ratio >= GOAL else "is BELOW"
        rounds = f" (median of {len(ratios)} rounds)" if len(ratios) > 1 else ""
        print(f"  {db}: stepup at {ratio:.0%} of the floor{rounds} {verdict} the 50% goal")
        threaded = [r for r in rows if r.db == db and r.target.startswith("floor") and r.ratio]
        if threaded:
            print(
                f"  {db}: stepup at {statistics.median(r.ratio or 0 for r in threaded):.0%} of "
                f"the {threaded[0].target} floor (the floor on stepup's thread bound; "
                "for comparison, not the goal)"
            )
    for db in dict.fromkeys(s.db for s in samples):
        print(f"  RSS {db}: {rss_verdict([s for s in samples if s.db == db])}")


def postgres_unreachable(admin_url: str) -> str | None:
    engine = create_engine(admin_url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        return f"{make_url(admin_url).render_as_string()} unreachable ({exc.__class__.__name__})"
    finally:
        engine.dispose()
    return None


def main() -> None:
    args = parse_args()
    rows: list[Row] = []
    samples: list[RssSample] = []
    print(
        f"stepup agent API bench: {args.concurrency} clients, {args.requests} requests per target "
        f"after {args.warmup} warm-up, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="stepup-api-bench-") as tmp:
        for kind in args.dbs:
            print(f"\n[{kind}]")
            reason = postgres_unreachable(args.postgres_admin_url) if kind == "postgres" else None
            if reason is not None:
                print(f"  skipped: {reason}")
                continue
            workdir = Path(tmp) / kind
            workdir.mkdir()
            db_rows, db_samples = bench_database(kind, workdir, args)
            rows += db_rows
            samples += db_samples
    if rows:
        summarise(rows, samples)
    if args.json:
        figures = {"rows": [asdict(r) for r in rows], "rss": [asdict(s) for s in samples]}
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
