"""`stepup mcp-proxy` latency: an allowed tool call through the proxy against the same call made
directly to the same upstream MCP server, same run.

One stepup server on loopback (temp SQLite, the example policy, whose `reads` rule allows any
read); one agent key. The bench process holds two MCP client sessions over stdio (the SDK's
``stdio_client``): one to ``examples/mcp/inventory_server.py`` directly, one to
``stepup mcp-proxy --tools examples/mcp/tools.yaml -- python inventory_server.py``. Both call
the read tool ``count_rows``, one call at a time. The two paths alternate by rounds (ABBA…), so
a drift of the machine's load weighs on both alike. Through the proxy each call is a submit
that claims at once (``claim=True``: allowed, so the answer carries the credential), the
upstream call and a complete: two HTTP calls to stepup, of which only the submit is on the
call's path (the proxy reports a success while the result goes back).

Before each call, both paths alike, an untimed pause (``--gap-ms``, 20): an agent does
something between two calls, and without one each proxied call would also share the CPU with
the previous call's report. ``--gap-ms 0`` measures calls back to back.

A third series times the same two HTTP calls made from this process with ``StepupClient``
(no MCP at all), to split the added latency into stepup's HTTP round trip on the path and the
rest (the extra stdio hop, MCP framing, the proxy's own work).

    .venv/bin/python bench/mcp_bench.py              # 10 rounds of 100 calls per path, ~2 min
    .venv/bin/python bench/mcp_bench.py --quick      # 2 rounds of 20 calls, ~20 s
    .venv/bin/python bench/mcp_bench.py --gap-ms 0   # calls back to back
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from api_bench import register_agent, server_env
from mcp import ClientSession, StdioServerParameters, stdio_client
from procs import cpu_seconds, free_port, start, stop

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
EXAMPLE = ROOT / "examples" / "mcp"
GOAL_MS = 15.0
# An agent does something between two tool calls (a model's turn takes far longer): without a
# pause, each call would also compete for the CPU with the previous call's outcome report,
# which the proxy sends while the result goes back.
GAP_MS = 20.0
TOOL = "count_rows"
ARGUMENTS = {"database": "orders", "table": "invoices"}
EXPECTED = "orders.invoices has 87 rows"
FULL = {"calls": 100, "rounds": 10, "warmup": 20}
QUICK = {"calls": 20, "rounds": 2, "warmup": 5}
WAIT_LIMIT = 900  # seconds: the whole run ends within this, whatever happens


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="stepup mcp-proxy added latency.")
    parser.add_argument("--calls", type=int, help="timed calls per path per round (100)")
    parser.add_argument("--rounds", type=int, help="rounds; each times both paths (10)")
    parser.add_argument("--warmup", type=int, help="untimed calls per path first (20)")
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=GAP_MS,
        help=f"untimed pause before each call, both paths alike (the agent's own time; {GAP_MS:g})",
    )
    parser.add_argument("--json", type=Path, help="also write the samples' summary here")
    parser.add_argument("--quick", action="store_true", help="sizes " + str(QUICK))
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.calls, args.rounds) < 1 or args.warmup < 0:
        parser.error("--calls and --rounds must be at least 1, --warmup at least 0")
    return args


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def text_of(result: types.CallToolResult) -> str:
    return " ".join(b.text for b in result.content if isinstance(b, types.TextContent))


@asynccontextmanager
async def mcp_session(
    command: list[str], env: dict[str, str] | None
) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=command[0], args=command[1:], cwd=str(ROOT), env=env)
    with open(os.devnull, "w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def timed_call(
    session: ClientSession, expected: str, gap_ms: float
) -> Callable[[], Awaitable[float]]:
    async def call() -> float:
        await anyio.sleep(gap_ms / 1000)  # the agent's own time between calls, untimed
        started = time.perf_counter()
        result = await session.call_tool(TOOL, ARGUMENTS)
        elapsed = time.perf_counter() - started
        if result.is_error or text_of(result) != expected:
            raise RuntimeError(f"unexpected result: {result.model_dump()}")
        return elapsed * 1000

    return call


def http_only(client: Any) -> Callable[[], Awaitable[dict[str, float]]]:
    """submit (claiming at once) + complete with StepupClient, as the proxy's gate makes them
    (each in a worker thread), timed one by one."""
    mapping = {"action": "db.count_rows", "target": "orders/invoices"}

    def submit() -> Any:
        return client.submit(
            mapping["action"],
            "read",
            mapping["target"],
            "production",
            "mcp_bench: a pre-authorised read",
            parameters=dict(ARGUMENTS),
            claim=True,
        )

    async def step(fn: Callable[[], Any]) -> tuple[Any, float]:
        started = time.perf_counter()
        value = await anyio.to_thread.run_sync(fn)
        return value, (time.perf_counter() - started) * 1000

    async def sequence() -> dict[str, float]:
        request, t_submit = await step(submit)
        if request.status.value != "active" or request.claimed is None:
            raise RuntimeError(f"expected an allowed read claimed at once, got {request.status}")
        _, t_complete = await step(lambda: client.complete(request.id, "succeeded", ""))
        # Not part of the gated call: an authenticated read that writes nothing, the fixed
        # cost of one request (HTTP, agent authentication, the worker thread hand-off).
        _, t_get = await step(lambda: client.get(request.id))
        return {"submit": t_submit, "complete": t_complete, "get": t_get}

    return sequence


def summary_line(name: str, samples: list[float]) -> str:
    return (
        f"  {name:<34} {len(samples):>6} {statistics.median(samples):>9.2f} "
        f"{percentile(samples, 90):>9.2f} {percentile(samples, 99):>9.2f}"
    )


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from stepup_client import StepupClient

    stepup_cli = str(Path(sys.executable).parent / "stepup")
    port = free_port()
    env = server_env(f"sqlite:///{workdir / 'bench.db'}", workdir, port)
    subprocess.run(
        [stepup_cli, "db", "upgrade"], env=env, cwd=workdir, check=True, capture_output=True
    )
    key = register_agent(stepup_cli, env, workdir)
    server = start("stepup", [stepup_cli, "serve"], port=port, env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    upstream = [sys.executable, str(EXAMPLE / "inventory_server.py")]
    proxy = [sys.executable, "-m", "bot.cli", "mcp-proxy", "--server", url]
    proxy += ["--tools", str(EXAMPLE / "tools.yaml"), "--timeout", "30s", "--", *upstream]
    samples: dict[str, list[float]] = {"direct": [], "proxy": []}
    http: dict[str, list[float]] = {
        "submit": [],
        "complete": [],
        "get": [],
        "http": [],
    }
    per_round: list[float] = []
    try:
        async with AsyncExitStack() as stack:
            direct = await stack.enter_async_context(mcp_session(upstream, None))
            proxied = await stack.enter_async_context(mcp_session(proxy, {"STEPUP_AGENT_KEY": key}))
            client = stack.enter_context(StepupClient(url, key, dpop=False))
            paths = {
                "direct": timed_call(direct, EXPECTED, args.gap_ms),
                "proxy": timed_call(proxied, EXPECTED, args.gap_ms),
            }
            http_sequence = http_only(client)
            for _ in range(args.warmup):
                for call in paths.values():
                    await call()
                await http_sequence()
            cpu_before = cpu_seconds(server.pid)
            for round_no in range(1, args.rounds + 1):
                order = ("direct", "proxy") if round_no % 2 else ("proxy", "direct")
                this_round: dict[str, list[float]] = {}
                for name in order:
                    this_round[name] = [await paths[name]() for _ in range(args.calls)]
                    samples[name] += this_round[name]
                for _ in range(args.calls):
                    steps = await http_sequence()
                    for step, ms in steps.items():
                        http[step].append(ms)
                    http["http"].append(steps["submit"] + steps["complete"])
                added = statistics.median(this_round["proxy"]) - statistics.median(
                    this_round["direct"]
                )
                per_round.append(added)
                print(
                    f"  round {round_no:>2} ({'/'.join(order)}): direct "
                    f"{statistics.median(this_round['direct']):6.2f} ms, proxy "
                    f"{statistics.median(this_round['proxy']):6.2f} ms, added {added:6.2f} ms"
                    f"  [load {os.getloadavg()[0]:.2f}]",
                    flush=True,
                )
            server_cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        stop(server)
    # Proxied calls + the HTTP-only series (whose extra GET is small next to a gated call).
    served = args.rounds * args.calls * 2
    return {
        "samples": samples,
        "http": http,
        "per_round_added_ms": per_round,
        "server_cpu_ms_per_gated_call": server_cpu / served * 1000,
    }


def report(args: argparse.Namespace, result: dict[str, Any], load_before: float) -> bool:
    samples, http = result["samples"], result["http"]
    direct, proxied = samples["direct"], samples["proxy"]
    print(f"\n  {'path':<34} {'calls':>6} {'median ms':>9} {'p90 ms':>9} {'p99 ms':>9}")
    print(summary_line("direct (SDK client → upstream)", direct))
    print(summary_line("proxy (SDK client → proxy → up)", proxied))
    print(summary_line("HTTP only: submit(claim)+complete", http["http"]))
    print(summary_line("  submit, claiming (on the path)", http["submit"]))
    print(summary_line("  complete (sent as the answer goes)", http["complete"]))
    print(summary_line("  (a GET of the request, for scale)", http["get"]))
    added = statistics.median(proxied) - statistics.median(direct)
    http_median = statistics.median(http["submit"])
    rest = added - http_median
    per_round = result["per_round_added_ms"]
    print(
        f"\n  added by the proxy (median proxy - median direct): {added:.2f} ms; per round: "
        + ", ".join(f"{a:.1f}" for a in per_round)
    )
    print(
        f"  where it goes: stepup's HTTP round trip on the path (submit, claiming) ≈ "
        f"{http_median:.2f} ms, the rest ≈ {rest:.2f} ms (second stdio hop, MCP framing, the "
        f"proxy's own work); pause before each call {args.gap_ms:g} ms"
    )
    cpu = result["server_cpu_ms_per_gated_call"]
    print(
        f"  stepup server CPU per gated call (2 requests): {cpu:.2f} ms; "
        f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    met = added <= GOAL_MS
    verdict = "meets" if met else "MISSES"
    print(f"\n  verdict: +{added:.2f} ms median {verdict} the ≤ {GOAL_MS:g} ms goal")
    if args.json:
        payload = {
            "direct": {"median": statistics.median(direct), "p90": percentile(direct, 90)},
            "proxy": {"median": statistics.median(proxied), "p90": percentile(proxied, 90)},
            "added_ms": added,
            "http_on_path_ms": http_median,
            "gap_ms": args.gap_ms,
            **{k: v for k, v in result.items() if k != "samples"},
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return met


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()[0]
    print(
        f"stepup mcp-proxy bench: {args.rounds} rounds x {args.calls} calls per path after "
        f"{args.warmup} warm-up, {os.cpu_count()} CPUs, load average {load_before:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="stepup-mcp-bench-") as tmp:

        async def bounded() -> dict[str, Any]:
            with anyio.fail_after(WAIT_LIMIT):
                return await bench(args, Path(tmp))

        result = anyio.run(bounded)
    met = report(args, result, load_before)
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
