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

Compare with another checkout (the commit before a change) in the same run, interleaved round
by round, each on a database of its own:

    git worktree add --detach /tmp/before <commit>
    .venv/bin/python bench/scaleout_bench.py --baseline /tmp/before --rounds 6
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
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the checkout at this path (e.g. a git worktree of the commit before a "
        "change), interleaved with this one in the same run, on a database of its own",
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


def print_phase(variant: str, phase: Phase, ratio: float | None) -> None:
    shown = f"{ratio:.2f}" if ratio is not None else "-"
    errors = f" ({phase.errors} errors)" if phase.errors else ""
    print(
        f"  {variant:<9} {phase.round:>5} {phase.replicas:>8} {phase.requests:>8} "
        f"{phase.rate:>7.0f} {phase.p50_ms:>7.1f} {phase.p99_ms:>7.1f} {shown:>6} "
        f"{phase.servers_cpu:>12.2f} {phase.machine_busy:>12.2f} {phase.lock_waits:>10.1f}{errors}"
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


@dataclass
class Variant:
    """One checkout under test: its two replicas on a scratch database of its own."""

    name: str
    url: str
    env: dict[str, str]  # for its CLI (stepup audit verify)
    servers: list[Server]
    requests: dict[int, bytes]
    phases: list[Phase]
    ratios: list[float]


def start_variant(
    name: str,
    tree: Path | None,
    stack: ExitStack,
    workdir: Path,
    body: bytes,
    args: argparse.Namespace,
) -> Variant:
    """Create its database and keys, register the bench agent, start its two replicas; with
    ``tree``, that checkout's code comes first on the import path of all of them."""
    stepup_cli = str(Path(sys.executable).parent / "stepup")
    workdir.mkdir()
    url = stack.enter_context(temporary_database(args.postgres_admin_url, "stepup_scaleout"))
    extra = {}
    if tree is not None:
        extra["PYTHONPATH"] = os.pathsep.join(
            [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    port_a, port_b = free_port(), free_port()
    env_a = {**server_env(url, workdir, port_a), **extra}
    key = register_agent(stepup_cli, env_a, workdir)  # creates the schema and the keys
    headers = {"Authorization": f"Bearer {key}"}
    servers = []
    for replica, port in (("a", port_a), ("b", port_b)):
        # Admission control must not shed the bench's own connections (when there is one).
        env = {**server_env(url, workdir, port), **extra, "STEPUP_MAX_IN_FLIGHT": "1000"}
        server = start(f"{name}-{replica}", [stepup_cli, "serve"], port=port, env=env, cwd=workdir)
        stack.callback(stop, server)
        servers.append(server)
        check_once(port, "/v1/requests", body, headers)
    requests = {
        port: encode_post("/v1/requests", port=port, body=body, headers=headers)
        for port in (port_a, port_b)
    }
    return Variant(name, url, env_a, servers, requests, [], [])


def summarise(variant: Variant) -> None:
    phases, ratios = variant.phases, variant.ratios
    median = statistics.median(ratios)
    pooled = {
        n: sum(p.requests for p in phases if p.replicas == n)
        / sum(p.requests / p.rate for p in phases if p.replicas == n)
        for n in (1, 2)
    }
    waits = {n: statistics.fmean(p.lock_waits for p in phases if p.replicas == n) for n in (1, 2)}
    ratio = pooled[2] / pooled[1]
    print(
        f"\n  [{variant.name}] two replicas / one, pooled over the rounds (all requests / all "
        f"time): {ratio:.2f}x ({pooled[1]:.0f} -> {pooled[2]:.0f} req/s); goal {GOAL}x: "
        + ("met" if ratio >= GOAL else "NOT met")
    )
    print(
        f"  [{variant.name}] per round: median {median:.2f}x ("
        + ", ".join(f"{r:.2f}" for r in ratios)
        + ")"
    )
    print(
        f"  [{variant.name}] backends waiting on a lock, mean: one replica {waits[1]:.1f}, "
        f"two {waits[2]:.1f}"
    )


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
    with tempfile.TemporaryDirectory(prefix="stepup-scaleout-") as tmp, ExitStack() as stack:
        trees: list[tuple[str, Path | None]] = [("this", None)]
        if args.baseline is not None:
            trees.append(("baseline", args.baseline))
        variants = [
            start_variant(name, tree, stack, Path(tmp) / name, body, args) for name, tree in trees
        ]
        print(
            f"  {'variant':<9} {'round':>5} {'replicas':>8} {'requests':>8} {'req/s':>7} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'ratio':>6} {'server cores':>12} {'busy cores':>12} "
            f"{'lock waits':>10}"
        )
        for round_no in range(1, args.rounds + 1):
            # Alternate which checkout and which replica count goes first.
            for variant in variants if round_no % 2 else variants[::-1]:
                servers = variant.servers
                order = [servers[:1], servers] if round_no % 2 else [servers, servers[:1]]
                done = {
                    len(group): measure(group, variant.requests, round_no, variant.url, args)
                    for group in order
                }
                one, two = done[1], done[2]
                variant.ratios.append(two.rate / one.rate)
                variant.phases += [one, two]
                print_phase(variant.name, one, None)
                print_phase(variant.name, two, variant.ratios[-1])
        verdicts = {}
        for variant in variants:
            for server in variant.servers:
                stop(server)
            verdicts[variant.name] = audit_verify(stepup_cli, variant.env, Path(tmp) / variant.name)
    for variant in variants:
        summarise(variant)
        print(f"  [{variant.name}] stepup audit verify after the run: {verdicts[variant.name]}")
    if args.json:
        figures = {
            v.name: {"phases": [p.__dict__ for p in v.phases], "ratios": v.ratios} for v in variants
        }
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
