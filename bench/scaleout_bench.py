"""Scale-out on PostgreSQL: the throughput of two `stepup serve` replicas against one.

Two replicas run as separate processes on one scratch PostgreSQL database. Each round
measures, interleaved (the order alternates from round to round, so the machine's drift
cancels out): one replica alone taking every connection, then both replicas with the
connections split between them. The figure is the ratio of the two rates, per round and as
the median. The load is pre-authorised submissions (each writes a request and its audit
entries, the write path every state change takes). "lock waits" is the mean number of the
database's backends waiting on a lock while the load runs (sampled every 50 ms): writers
queued on the audit chain's head row show there, however busy the machine is. At the end,
`stepup audit verify` checks the log the run wrote (and says how many entries were still
pending).

    .venv/bin/python bench/scaleout_bench.py                 # ~3 min on 2 cores
    .venv/bin/python bench/scaleout_bench.py --rounds 5 --requests 6000

Run it against another checkout (e.g. the commit before a change) with that checkout first
on the import path: ``PYTHONPATH=/tmp/other .venv/bin/python bench/scaleout_bench.py``.
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
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from api_bench import INTENT, check_once, postgres_unreachable, register_agent, server_env
from loadgen import PhaseResult, encode_post, run_phase
from procs import Server, cpu_seconds, free_port, machine_jiffies, start, stop
from sqlalchemy import create_engine, text
from temp_postgres import temporary_database

GOAL = 1.6


@dataclass
class Phase:
    replicas: int
    round: int
    requests: int
    errors: int
    rate: float
    p50_ms: float
    p99_ms: float
    servers_cpu: float  # cores the replicas used
    machine_busy: float  # cores busy on the whole machine
    lock_waits: float  # backends of this database waiting on a lock, mean of samples


class LockWaits:
    """Samples, every 50 ms while the timed load runs, how many backends of the database wait
    on a heavyweight lock (the audit head row, before issue 16): contention that does not
    depend on how busy the machine is."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url, pool_size=1)
        self._samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        with self._engine.connect() as conn:
            while not self._stop.wait(0.05):
                self._samples.append(int(conn.execute(query).scalar_one()))
                conn.rollback()

    def __enter__(self) -> LockWaits:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._engine.dispose()

    @property
    def mean(self) -> float:
        return statistics.fmean(self._samples) if self._samples else 0.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="stepup: two replicas against one on PostgreSQL")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000, help="timed requests per phase")
    parser.add_argument("--warmup", type=int, default=400, help="untimed requests per phase first")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in all")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "STEPUP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="where to CREATE and DROP the scratch database",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if min(args.rounds, args.requests, args.warmup, args.concurrency) < 1:
        parser.error("sizes must be at least 1")
    if args.concurrency < 2:
        parser.error("--concurrency must be at least 2 (split between two replicas)")
    return args


async def _spread(targets: list[tuple[int, bytes]], total: int, concurrency: int) -> PhaseResult:
    """``total`` requests over ``concurrency`` connections, split evenly between targets."""
    n = len(targets)
    results = await asyncio.gather(
        *(
            run_phase(
                port,
                request,
                total=total // n + (1 if i < total % n else 0),
                concurrency=concurrency // n + (1 if i < concurrency % n else 0),
                expect=201,
            )
            for i, (port, request) in enumerate(targets)
        )
    )
    latencies = sorted(x for r in results for x in r.latencies)
    statuses = results[0].statuses
    for r in results[1:]:
        statuses = statuses + r.statuses
    return PhaseResult(
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        elapsed=max(r.elapsed for r in results),
        latencies=latencies,
        statuses=statuses,
        client_cpu=sum(r.client_cpu for r in results),
    )


def measure(
    servers: list[Server],
    requests: dict[int, bytes],
    round_no: int,
    url: str,
    args: argparse.Namespace,
) -> Phase:
    targets = [(s.port, requests[s.port]) for s in servers]
    asyncio.run(_spread(targets, args.warmup, args.concurrency))
    cpu_before = sum(cpu_seconds(s.pid) for s in servers)
    busy_before, total_before = machine_jiffies()
    with LockWaits(url) as waits:
        result = asyncio.run(_spread(targets, args.requests, args.concurrency))
    cpu_used = sum(cpu_seconds(s.pid) for s in servers) - cpu_before
    busy_after, total_after = machine_jiffies()
    if result.requests == 0 or result.errors >= 100:
        raise RuntimeError(f"the load failed: {result.errors} errors, {dict(result.statuses)}")
    cores = os.cpu_count() or 1
    return Phase(
        replicas=len(servers),
        round=round_no,
        requests=result.requests,
        errors=result.errors,
        rate=result.rate,
        p50_ms=result.percentile_ms(50),
        p99_ms=result.percentile_ms(99),
        servers_cpu=cpu_used / result.elapsed,
        machine_busy=cores * (busy_after - busy_before) / max(total_after - total_before, 1),
        lock_waits=waits.mean,
    )


def print_phase(phase: Phase, ratio: float | None) -> None:
    shown = f"{ratio:.2f}" if ratio is not None else "-"
    errors = f" ({phase.errors} errors)" if phase.errors else ""
    print(
        f"  {phase.round:>5} {phase.replicas:>8} {phase.requests:>8} {phase.rate:>7.0f} "
        f"{phase.p50_ms:>7.1f} {phase.p99_ms:>7.1f} {shown:>6} {phase.servers_cpu:>12.2f} "
        f"{phase.machine_busy:>12.2f} {phase.lock_waits:>10.1f}{errors}"
    )


def audit_verify(stepup_cli: str, env: dict[str, str], workdir: Path) -> str:
    done = subprocess.run(
        [stepup_cli, "audit", "verify"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    return f"exit {done.returncode}: " + " | ".join(lines)


def main() -> None:
    args = parse_args()
    reason = postgres_unreachable(args.postgres_admin_url)
    if reason is not None:
        sys.exit(f"PostgreSQL needed: {reason}")
    stepup_cli = str(Path(sys.executable).parent / "stepup")
    body = json.dumps(INTENT).encode()
    print(
        f"stepup scale-out bench (PostgreSQL): {args.concurrency} connections, {args.requests} "
        f"requests per phase after {args.warmup} warm-up, {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs"
    )
    phases: list[Phase] = []
    ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="stepup-scaleout-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        url = stack.enter_context(temporary_database(args.postgres_admin_url, "stepup_scaleout"))
        port_a, port_b = free_port(), free_port()
        env_a = server_env(url, workdir, port_a)
        key = register_agent(stepup_cli, env_a, workdir)  # creates the schema and the keys
        headers = {"Authorization": f"Bearer {key}"}
        servers = []
        for name, port in (("replica-a", port_a), ("replica-b", port_b)):
            # Admission control must not shed the bench's own connections (when there is one).
            env = {**server_env(url, workdir, port), "STEPUP_MAX_IN_FLIGHT": "1000"}
            server = start(name, [stepup_cli, "serve"], port=port, env=env, cwd=workdir)
            stack.callback(stop, server)
            servers.append(server)
            check_once(port, "/v1/requests", body, headers)
        requests = {
            port: encode_post("/v1/requests", port=port, body=body, headers=headers)
            for port in (port_a, port_b)
        }
        print(
            f"  {'round':>5} {'replicas':>8} {'requests':>8} {'req/s':>7} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'ratio':>6} {'server cores':>12} {'busy cores':>12} "
            f"{'lock waits':>10}"
        )
        for round_no in range(1, args.rounds + 1):
            order = [servers[:1], servers] if round_no % 2 else [servers, servers[:1]]
            done = {len(group): measure(group, requests, round_no, url, args) for group in order}
            one, two = done[1], done[2]
            ratio = two.rate / one.rate
            ratios.append(ratio)
            phases += [one, two]
            print_phase(one, None)
            print_phase(two, ratio)
        for server in servers:
            stop(server)  # a clean stop: what the replicas left pending is chained or stays
        verdict = audit_verify(stepup_cli, env_a, workdir)
    median = statistics.median(ratios)
    print(
        f"\n  two replicas / one: {median:.2f}x (median of {len(ratios)} rounds: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"); goal {GOAL}x: "
        + ("met" if median >= GOAL else "NOT met")
    )
    print(
        f"  median rates: one replica "
        f"{statistics.median(p.rate for p in phases if p.replicas == 1):.0f} req/s, two "
        f"{statistics.median(p.rate for p in phases if p.replicas == 2):.0f} req/s"
    )
    pooled = {
        n: sum(p.requests for p in phases if p.replicas == n)
        / sum(p.requests / p.rate for p in phases if p.replicas == n)
        for n in (1, 2)
    }
    print(
        f"  pooled over the rounds (all requests / all time): one replica {pooled[1]:.0f} req/s, "
        f"two {pooled[2]:.0f} req/s, ratio {pooled[2] / pooled[1]:.2f}x"
    )
    waits = {n: statistics.fmean(p.lock_waits for p in phases if p.replicas == n) for n in (1, 2)}
    print(f"  backends waiting on a lock, mean: one replica {waits[1]:.1f}, two {waits[2]:.1f}")
    print(f"  stepup audit verify after the run: {verdict}")
    if args.json:
        figures = {"phases": [p.__dict__ for p in phases], "ratios": ratios, "verify": verdict}
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
