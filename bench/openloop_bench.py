"""Open-loop latency: stepup's submit and the floor at fixed offered rates, both databases.

For each database (a temp SQLite file; a scratch PostgreSQL database created and dropped here)
one `stepup serve` and one floor (`bench/floor_app.py`: bare FastAPI + one SQLAlchemy insert)
run side by side, as in `api_bench.py`. At each offered rate (default 50, 100, 200 req/s) each
target gets a warm-up, then ``--duration`` seconds of requests sent on a fixed schedule
(`loadgen.run_open_loop`): request i leaves at start + i/rate whatever the server is doing, and
its latency counts from that scheduled time, so a server that falls behind is charged for the
queue it builds (no coordinated omission). The order floor/stepup alternates from one rate to
the next. Reported per phase: the served rate (2xx a second), every non-2xx answer by status
(503 is admission control shedding load), failures without an answer, p50/p99/p99.9/max of the
2xx latencies, the peak of requests in flight, and the server's CPU per request.

    .venv/bin/python bench/openloop_bench.py                # 25 s per phase, ~15 min
    .venv/bin/python bench/openloop_bench.py --quick        # 5 s per phase, ~4 min
    .venv/bin/python bench/openloop_bench.py --dbs sqlite --rates 100 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from api_bench import (
    BENCH_DIR,
    CLOSED_LOOP_ADMISSION,
    INTENT,
    check_once,
    postgres_unreachable,
    register_agent,
    scratch_database,
    server_env,
)
from loadgen import OpenLoopResult, encode_post, run_open_loop
from procs import Server, cpu_seconds, free_port, machine_jiffies, start, stop

OVERLOAD_RATE = 200.0  # issue 16: at this offer, serve it or shed with 503 ...
OVERLOAD_P99_MS = 100.0  # ... while the p99 of what is served stays under this


@dataclass
class Row:
    target: str
    db: str
    offered: float  # req/s
    sent: int
    served_rate: float  # 2xx a second, schedule start to last answer
    ok: int  # 2xx answers
    not_ok: dict[int, int]  # non-2xx answers by status
    failures: dict[str, int]  # no answer, by exception class
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    max_in_flight: int
    max_connections: int
    late_sends: int
    server_cpu_ms: float  # per request sent
    client_cpu_ms: float
    machine_busy: float  # cores busy on average during the phase, all processes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dbs", default="sqlite,postgres", help="comma-separated list")
    parser.add_argument("--rates", default="50,100,200", help="offered req/s, comma-separated")
    parser.add_argument("--duration", type=float, help="seconds per phase (25; --quick 5)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per phase (3; --quick 1)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--floor-threads", type=int, help="floor worker threads (anyio's 40)")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "STEPUP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="where to CREATE and DROP the scratch database",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="5 s phases after 1 s of warm-up")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 5.0 if args.quick else 25.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 3.0
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.dbs = [name.strip() for name in args.dbs.split(",") if name.strip()]
    if not args.rates or min(args.rates) <= 0 or args.duration <= 0 or args.warmup < 0:
        parser.error("rates and --duration must be positive")
    unknown = set(args.dbs) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))}")
    return args


def offer(
    port: int, request: bytes, rate: float, duration: float, args: argparse.Namespace
) -> OpenLoopResult:
    return asyncio.run(
        run_open_loop(
            port,
            request,
            rate=rate,
            duration=duration,
            timeout=args.timeout,
            max_connections=args.max_connections,
        )
    )


def measure(server: Server, request: bytes, db: str, rate: float, args: argparse.Namespace) -> Row:
    if args.warmup > 0:
        offer(server.port, request, rate, args.warmup, args)
    cpu_before, (busy_before, total_before) = cpu_seconds(server.pid), machine_jiffies()
    result = offer(server.port, request, rate, args.duration, args)
    cpu_used = cpu_seconds(server.pid) - cpu_before
    busy_after, total_after = machine_jiffies()
    cores = os.cpu_count() or 1
    return Row(
        target=server.name,
        db=db,
        offered=rate,
        sent=result.sent,
        served_rate=result.served_rate,
        ok=result.ok,
        not_ok=result.not_ok,
        failures=dict(result.failures),
        p50_ms=result.percentile_ms(50),
        p99_ms=result.percentile_ms(99),
        p999_ms=result.percentile_ms(99.9),
        max_ms=result.latencies[-1] * 1000 if result.latencies else float("nan"),
        max_in_flight=result.max_in_flight,
        max_connections=result.max_connections,
        late_sends=result.late_sends,
        server_cpu_ms=cpu_used / max(result.sent, 1) * 1000,
        client_cpu_ms=result.client_cpu / max(result.sent, 1) * 1000,
        machine_busy=cores * (busy_after - busy_before) / max(total_after - total_before, 1),
    )


def refused(row: Row) -> str:
    parts = [f"{status}: {n}" for status, n in row.not_ok.items()]
    parts += [f"{name}: {n}" for name, n in row.failures.items()]
    return ", ".join(parts) or "-"


def print_rows(rows: list[Row], *, header: bool) -> None:
    if header:
        print(
            f"  {'target':<7} {'DB':<8} {'offered':>7} {'sent':>6} {'served/s':>8} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'max ms':>7} {'in flight':>9} "
            f"{'CPU ms/req':>10} {'busy':>5}  non-2xx / failures"
        )
    for r in rows:
        print(
            f"  {r.target:<7} {r.db:<8} {r.offered:>7.0f} {r.sent:>6} {r.served_rate:>8.1f} "
            f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.p999_ms:>8.1f} {r.max_ms:>7.0f} "
            f"{r.max_in_flight:>9} {r.server_cpu_ms:>10.2f} {r.machine_busy:>5.2f}  {refused(r)}",
            flush=True,
        )


def markdown(rows: list[Row]) -> None:
    """The table for bench/README.md: one line per database and rate, floor beside stepup."""
    print(
        "\n| DB | offered req/s | floor served/s | floor p50 / p99 / p99.9 ms "
        "| stepup served/s | stepup p50 / p99 / p99.9 ms | stepup non-2xx | stepup max in flight |"
    )
    print("|---|---:|---:|---|---:|---|---|---:|")
    for db in dict.fromkeys(r.db for r in rows):
        for rate in dict.fromkeys(r.offered for r in rows if r.db == db):
            by = {r.target: r for r in rows if r.db == db and r.offered == rate}
            floor, stepup = by.get("floor"), by.get("stepup")
            if floor is None or stepup is None:
                continue
            print(
                f"| {db} | {rate:.0f} | {floor.served_rate:.0f} "
                f"| {floor.p50_ms:.1f} / {floor.p99_ms:.1f} / {floor.p999_ms:.1f} "
                f"| {stepup.served_rate:.0f} "
                f"| {stepup.p50_ms:.1f} / {stepup.p99_ms:.1f} / {stepup.p999_ms:.1f} "
                f"| {refused(stepup)} | {stepup.max_in_flight} |"
            )


def overload_verdicts(rows: list[Row]) -> None:
    """At 200 req/s offered: does stepup serve it (or shed with 503) with p99 < 100 ms?"""
    for r in rows:
        if r.target != "stepup" or r.offered != OVERLOAD_RATE:
            continue
        shed = r.not_ok.get(503, 0)
        answered = r.ok + shed
        keeps_up = answered >= 0.99 * r.sent and not r.failures
        fast = r.p99_ms < OVERLOAD_P99_MS
        verdict = "met" if keeps_up and fast else "MISSED"
        print(
            f"  {r.db}: {OVERLOAD_RATE:.0f} req/s offered: {r.ok} served ({r.served_rate:.0f}/s), "
            f"{shed} shed with 503, other non-2xx/failures: "
            f"{sum(n for s, n in r.not_ok.items() if s != 503) + sum(r.failures.values())}; "
            f"p99 of the served {r.p99_ms:.0f} ms: goal (serve or shed, p99 < "
            f"{OVERLOAD_P99_MS:.0f} ms) {verdict}"
        )


def bench_database(kind: str, workdir: Path, args: argparse.Namespace) -> list[Row]:
    stepup_cli = str(Path(sys.executable).parent / "stepup")
    body = json.dumps(INTENT).encode()
    rows: list[Row] = []
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(kind, workdir, args.postgres_admin_url))
        port, floor_port = free_port(), free_port()
        env = server_env(url, workdir, port)
        for name in CLOSED_LOOP_ADMISSION:  # stepup on its default admission bound
            env.pop(name, None)
        key = register_agent(stepup_cli, env, workdir)
        headers = {"Authorization": f"Bearer {key}"}
        stepup = start("stepup", [stepup_cli, "serve"], port=port, env=env, cwd=workdir)
        stack.callback(stop, stepup)
        floor_argv = [
            sys.executable,
            str(BENCH_DIR / "floor_app.py"),
            "--database-url",
            url,
            "--port",
            str(floor_port),
        ]
        if args.floor_threads:
            floor_argv += ["--threads", str(args.floor_threads)]
        floor = start("floor", floor_argv, port=floor_port, env=env, cwd=workdir)
        stack.callback(stop, floor)
        check_once(port, "/v1/requests", body, headers)
        check_once(floor_port, "/floor", body, headers)
        targets = [
            (floor, encode_post("/floor", port=floor_port, body=body, headers=headers)),
            (stepup, encode_post("/v1/requests", port=port, body=body, headers=headers)),
        ]
        for i, rate in enumerate(args.rates):
            for server, request in targets if i % 2 == 0 else targets[::-1]:
                row = measure(server, request, kind, rate, args)
                rows.append(row)
                print_rows([row], header=not rows[:-1])
    return rows


def main() -> None:
    args = parse_args()
    print(
        f"open-loop bench: rates {', '.join(f'{r:g}' for r in args.rates)} req/s, "
        f"{args.duration:g} s per phase after {args.warmup:g} s of warm-up, {os.cpu_count()} "
        f"CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="stepup-openloop-bench-") as tmp:
        for kind in args.dbs:
            print(f"\n[{kind}]")
            reason = postgres_unreachable(args.postgres_admin_url) if kind == "postgres" else None
            if reason is not None:
                print(f"  skipped: {reason}")
                continue
            workdir = Path(tmp) / kind
            workdir.mkdir()
            rows += bench_database(kind, workdir, args)
    if rows:
        markdown(rows)
        print()
        overload_verdicts(rows)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
