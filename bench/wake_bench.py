"""Cross-process wake: how long a change committed by another process takes to answer a
waiting long-poll, on SQLite (the ``PRAGMA data_version`` watch) and PostgreSQL
(``LISTEN``/``NOTIFY``).

A `stepup serve` process holds the long-poll (``GET /v1/requests/{id}?wait=30``, the request
pre-authorised, so ``approved``); this bench process, the "other process" (as `stepup revoke`
from the CLI would be), revokes the request through its own engine and connection. The figure
is the time from the revoke's commit returning here to the long-poll's answer arriving, on one
machine's monotonic clock (shared by all processes on Linux). Before the watch, SQLite's
long-polls heard such a change only at their fixed 2 s re-read (p50 ~1 s, p99 ~2 s).

    .venv/bin/python bench/wake_bench.py                     # ~1 min: 100 wakes per database
    .venv/bin/python bench/wake_bench.py --samples 300 --sqlite-only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from api_bench import INTENT, postgres_unreachable, register_agent, server_env
from procs import free_port, start, stop
from temp_postgres import temporary_database

POLL_SECONDS = 30
PARK_SECONDS = 0.3  # time given to the long-poll to reach the server and park


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "STEPUP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    return parser.parse_args()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def measure(name: str, url: str, workdir: Path, samples: int) -> list[float]:
    from bot.clock import utc_now
    from bot.settings import Settings
    from bot.wiring import build_service
    from core.storage.pg_changes import PgChangeRelay

    stepup_cli = str(Path(sys.executable).parent / "stepup")
    port = free_port()
    env = {**server_env(url, workdir, port), "STEPUP_SANDBOX": "0"}
    key = register_agent(stepup_cli, env, workdir)
    server = start(f"wake-{name}", [stepup_cli, "serve"], port=port, env=env, cwd=workdir)
    with ExitStack() as stack:
        stack.callback(stop, server)
        # The other process: this one, with its own engine, as the CLI would be.
        settings = Settings(
            STEPUP_DATABASE_URL=url,
            STEPUP_POLICY_FILE=env["STEPUP_POLICY_FILE"],
            STEPUP_KEYS_DIR=env["STEPUP_KEYS_DIR"],
        )
        service = build_service(settings)
        stack.callback(service.db.dispose)
        if not service.db.is_sqlite:
            relay = PgChangeRelay(url)
            service.subscribe(relay.publish)
            relay.start(listen=False)
            stack.callback(relay.stop)
        client = stack.enter_context(
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=POLL_SECONDS + 10,
            )
        )
        latencies: list[float] = []
        for _ in range(samples):
            created = client.post("/v1/requests", json=INTENT)
            created.raise_for_status()
            request_id = created.json()["id"]
            answered: list[tuple[float, str]] = []

            def poll(
                request_id: str = request_id, answered: list[tuple[float, str]] = answered
            ) -> None:
                answer = client.get(f"/v1/requests/{request_id}", params={"wait": POLL_SECONDS})
                answered.append((time.monotonic(), answer.json()["status"]))

            poller = threading.Thread(target=poll)
            poller.start()
            time.sleep(PARK_SECONDS)
            service.revoke(request_id, by="bench", reason="wake bench", now=utc_now())
            committed = time.monotonic()
            poller.join(POLL_SECONDS + 10)
            ((at, status),) = answered
            if status != "revoked":
                raise RuntimeError(f"the long-poll answered {status}, not revoked")
            latencies.append(at - committed)
    return latencies


def main() -> None:
    args = parse_args()
    backends = ["sqlite"]
    if not args.sqlite_only:
        reason = postgres_unreachable(args.postgres_admin_url)
        if reason is None:
            backends.append("postgres")
        else:
            print(f"PostgreSQL skipped: {reason}")
    print(
        f"cross-process wake: {args.samples} long-polls per database, each answered by a revoke "
        f"committed in another process; {os.cpu_count()} CPUs"
    )
    print(f"  {'database':<10} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="stepup-wake-") as tmp, ExitStack() as stack:
            workdir = Path(tmp)
            if backend == "sqlite":
                url = f"sqlite:///{workdir / 'stepup.db'}"
            else:
                url = stack.enter_context(
                    temporary_database(args.postgres_admin_url, "stepup_wake")
                )
            got = measure(backend, url, workdir, args.samples)
        ms = [v * 1000 for v in got]
        print(
            f"  {backend:<10} {statistics.median(ms):>7.1f} {percentile(ms, 0.9):>7.1f} "
            f"{percentile(ms, 0.99):>7.1f} {max(ms):>7.1f}"
        )


if __name__ == "__main__":
    main()
