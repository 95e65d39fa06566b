"""The gated call an agent pays for a pre-authorised action, end to end, one agent at a time.

Three ways, interleaved round by round against the same server and database, with one floor
insert (bench/floor_app.py: a bare FastAPI + SQLAlchemy insert) measured in the same rounds:

- ``three trips``: submit, claim, complete (what a client did before ``"claim": true``);
- ``one trip``: submit with ``"claim": true`` (the answer carries the credential), complete;
- ``floor``: one POST that inserts one row.

stepup runs as its own process (``stepup serve``, the example policy, whose ``reads`` rule
pre-authorises ``db.query``); the client is one keep-alive ``http.client`` connection, so
nearly all of the time is the server's. The server's CPU per gated call comes from /proc.

    .venv/bin/python bench/gated_bench.py                  # both databases, ~2 min
    .venv/bin/python bench/gated_bench.py --dbs sqlite --calls 200 --rounds 3
    # an older checkout (before "claim": true): its three trips and the floor only
    PYTHONPATH=/tmp/before .venv/bin/python bench/gated_bench.py --ways three,floor
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from api_bench import INTENT, register_agent, scratch_database, server_env
from procs import cpu_seconds, free_port, start, stop

BENCH_DIR = Path(__file__).resolve().parent
GOALS_MS = {"sqlite": 20.0, "postgres": 30.0}  # issue 16: the full gated call, median


@dataclass
class Series:
    name: str
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


class Connection:
    """One keep-alive HTTP/1.1 connection; every answer is read in full and checked."""

    def __init__(self, port: int, key: str) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict[str, object] | None, expect: int) -> dict[str, object]:
        payload = json.dumps(body or {}).encode()
        self.http.request("POST", path, body=payload, headers=self.headers)
        answer = self.http.getresponse()
        data = answer.read()
        if answer.status != expect:
            raise RuntimeError(f"POST {path}: {answer.status} {data[:300]!r}")
        parsed: dict[str, object] = json.loads(data)
        return parsed

    def close(self) -> None:
        self.http.close()


DONE = {"outcome": "succeeded", "detail": ""}


def three_trips(c: Connection) -> None:
    request = c.post("/v1/requests", INTENT, 201)
    path = f"/v1/requests/{request['id']}"
    c.post(f"{path}/credential", None, 200)
    c.post(f"{path}/complete", DONE, 200)


def one_trip(c: Connection) -> None:
    request = c.post("/v1/requests", INTENT | {"claim": True}, 201)
    credential = request.get("credential")
    if (
        request["status"] != "active"
        or not isinstance(credential, dict)
        or "token" not in credential
    ):
        raise RuntimeError(f"submit with claim did not claim: {request}")
    c.post(f"/v1/requests/{request['id']}/complete", DONE, 200)


def floor_insert(c: Connection) -> None:
    c.post("/floor", INTENT, 201)


def measure(
    series: Series, call: Callable[[], None], calls: int, pid: int, conn: Connection
) -> None:
    # A fresh connection, opened before the clock starts: an idle one may have been closed
    # by the server's keep-alive timeout while the other ways ran.
    conn.http.close()
    conn.http.connect()
    before = cpu_seconds(pid)
    for _ in range(calls):
        started = time.perf_counter()
        call()
        series.latencies.append(time.perf_counter() - started)
    series.server_cpu += cpu_seconds(pid) - before


def bench_database(kind: str, workdir: Path, args: argparse.Namespace) -> list[Series]:
    stepup_cli = str(Path(sys.executable).parent / "stepup")
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(kind, workdir, args.postgres_admin_url))
        port, floor_port = free_port(), free_port()
        env = server_env(url, workdir, port)
        key = register_agent(stepup_cli, env, workdir)
        server = start("stepup", [stepup_cli, "serve"], port=port, env=env, cwd=workdir)
        stack.callback(stop, server)
        floor_argv = [
            sys.executable,
            str(BENCH_DIR / "floor_app.py"),
            "--database-url",
            url,
            "--port",
            str(floor_port),
        ]
        floor = start("floor", floor_argv, port=floor_port, env=env, cwd=workdir)
        stack.callback(stop, floor)
        agent, floor_client = Connection(port, key), Connection(floor_port, key)
        stack.callback(agent.close)
        stack.callback(floor_client.close)
        series = [Series("three trips"), Series("one trip"), Series("floor insert")]
        plan = [
            (series[0], lambda: three_trips(agent), server.pid, agent),
            (series[1], lambda: one_trip(agent), server.pid, agent),
            (series[2], lambda: floor_insert(floor_client), floor.pid, floor_client),
        ]
        chosen = {"three": series[0], "one": series[1], "floor": series[2]}
        keep = [chosen[way] for way in args.ways]
        plan = [step for step in plan if step[0] in keep]
        for one, call, pid, conn in plan:  # warm-up, not measured
            measure(Series(one.name), call, args.warmup, pid, conn)
        for _ in range(args.rounds):
            for one, call, pid, conn in plan:
                measure(one, call, args.calls, pid, conn)
        return series


def report(kind: str, series: list[Series], calls: int) -> None:
    floor = statistics.median(series[2].latencies or [float("nan")]) * 1000
    print(f"\n{kind}: {len(series[0].latencies)} calls per way, interleaved rounds")
    print(f"  {'way':<14}{'p50 ms':>9}{'p99 ms':>9}{'x floor':>9}{'server CPU ms':>15}")
    for one in series:
        if not one.latencies:
            continue
        p50 = one.pct(50)
        cpu = one.server_cpu / max(len(one.latencies), 1) * 1000
        print(f"  {one.name:<14}{p50:>9.2f}{one.pct(99):>9.2f}{p50 / floor:>9.2f}{cpu:>15.2f}")
    if not series[1].latencies:
        return
    goal = GOALS_MS[kind]
    got = series[1].pct(50)
    verdict = "met" if got <= goal else "MISSED"
    print(f"  goal: the gated call (one trip + complete) median <= {goal:.0f} ms: {verdict}")
    del calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dbs", default="sqlite,postgres")
    parser.add_argument("--calls", type=int, default=150, help="gated calls per way per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument(
        "--ways", default="three,one,floor", help="which ways to run: three, one, floor"
    )
    parser.add_argument(
        "--postgres-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    args = parser.parse_args()
    args.ways = [way.strip() for way in args.ways.split(",") if way.strip()]
    if not set(args.ways) <= {"three", "one", "floor"}:
        parser.error("--ways: three, one, floor")
    for kind in [name.strip() for name in args.dbs.split(",") if name.strip()]:
        with tempfile.TemporaryDirectory(prefix=f"gated-bench-{kind}-") as tmp:
            report(kind, bench_database(kind, Path(tmp), args), args.calls)


if __name__ == "__main__":
    main()
