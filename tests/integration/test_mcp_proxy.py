"""`stepup mcp-proxy` end to end: the SDK's client session over stdio against the proxy (a
subprocess) in front of the example MCP server (another subprocess), with the real stepup API
on loopback. Approvals are recorded through the core service, as the Slack layer records them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client

from bot.mcp_proxy.mapping import MappingRefused, parse_tools
from bot.slack.cards import APPROVE
from core.agents import AgentRegistry
from core.model import Approver, Status, Vote
from core.storage.database import Database
from tests.integration.conftest import LiveApi
from tests.integration.live import free_port
from tests.integration.slack_env import slack_live
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mcp"
ALICE = Approver("U0ALICE", "alice@example.com", "Alice")
BOB = Approver("U0BOB", "bob@example.com", "Bob")
WAIT_LIMIT = 60  # seconds: every test ends within this, whatever the proxy does

# The example server plus a tool that kills the server mid-call, one the tools file leaves to
# its "*" entry (which TEST_POLICY's never-drop-prod-db rule denies), one with defaults (top
# level and in a nested object) that echoes the arguments it ran with, one that changes those
# defaults and says so (notifications/tools/list_changed), and one that hangs (bounded).
UPSTREAM = textwrap.dedent(
    f"""
    import json, os, sys
    import anyio
    from pydantic import BaseModel
    sys.path.insert(0, {str(EXAMPLE)!r})
    from inventory_server import server
    from mcp.server.mcpserver import Context
    from mcp_types import ToolAnnotations

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def crash(reason: str) -> str:
        os._exit(3)

    @server.tool()
    def purge(database: str) -> str:
        return "purged " + database

    class ArchiveOptions(BaseModel):
        compress: bool = True
        level: int = 6

    def make_archive(keep: int):
        def archive(
            database: str, options: ArchiveOptions, table: str = "sessions", keep_days: int = keep
        ) -> str:
            ran = dict(database=database, table=table, keep_days=keep_days, options=options)
            return json.dumps(ran, default=lambda o: o.model_dump(), sort_keys=True)
        return archive

    server.add_tool(make_archive(30), name="archive")

    @server.tool()
    async def retune(keep_days: int, ctx: Context) -> str:
        server.remove_tool("archive")
        server.add_tool(make_archive(keep_days), name="archive")
        await ctx.session.send_tool_list_changed()
        return "retuned"

    @server.tool()
    async def hang(seconds: int) -> str:
        await anyio.sleep(seconds)
        return "woke up"

    server.run()
    """
)
TOOLS = (EXAMPLE / "tools.yaml").read_text() + (
    "  crash: {action: db.crash, action_class: read, target: crash, environment: production}\n"
    "  archive: {action: db.archive, action_class: read, target: '{database}/{table}',\n"
    "            environment: production}\n"
    "  retune: {action: db.retune, action_class: read, target: orders, environment: production}\n"
    "  hang: {action: db.hang, action_class: read, target: orders, environment: production}\n"
    '  "*": {action: db.drop_database, action_class: destructive, target: "{database}",\n'
    "        environment: production}\n"
)


def now() -> datetime:
    return datetime.now(UTC)


@asynccontextmanager
async def session_with(command: list[str]) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=command[0], args=command[1:], cwd=str(ROOT))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def proxy(
    live_api: LiveApi,
    tmp_path: Path,
    timeout: str = "60s",
    upstream_url: str | None = None,
    call_timeout: str | None = None,
) -> AbstractAsyncContextManager[ClientSession]:
    return proxy_to(live_api.url, live_api.agent_key, tmp_path, timeout, upstream_url, call_timeout)


def proxy_command(
    url: str,
    tmp_path: Path,
    timeout: str,
    upstream_url: str | None = None,
    call_timeout: str | None = None,
) -> list[str]:
    upstream, tools = tmp_path / "upstream.py", tmp_path / "tools.yaml"
    upstream.write_text(UPSTREAM)
    tools.write_text(TOOLS)
    command = [sys.executable, "-m", "bot.cli", "mcp-proxy", "--server", url]
    command += ["--tools", str(tools), "--timeout", timeout]
    if call_timeout is not None:
        command += ["--call-timeout", call_timeout]
    if upstream_url is None:
        command += ["--", sys.executable, str(upstream)]
    else:
        command += ["--upstream-url", upstream_url]
    return command


@asynccontextmanager
async def proxy_to(
    url: str,
    agent_key: str,
    tmp_path: Path,
    timeout: str,
    upstream_url: str | None = None,
    call_timeout: str | None = None,
) -> AsyncIterator[ClientSession]:
    command = proxy_command(url, tmp_path, timeout, upstream_url, call_timeout)
    params = StdioServerParameters(
        command=command[0],
        args=command[1:],
        cwd=str(ROOT),
        env={"STEPUP_AGENT_KEY": agent_key},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(WAIT_LIMIT):
            await test()

    anyio.run(bounded)


def text_of(result: types.CallToolResult) -> str:
    return " ".join(b.text for b in result.content if isinstance(b, types.TextContent))


class Progress:
    """Progress notifications of one call; ``first`` is set on the first one."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.first = anyio.Event()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.messages.append(message or "")
        self.first.set()

    def request_id(self) -> str:
        match = re.search(r"request (\S+) waits", self.messages[0])
        assert match, self.messages
        return match.group(1)


def test_tools_are_listed_unchanged_and_a_read_returns_the_upstream_result(
    live_api: LiveApi, tmp_path: Path
) -> None:
    async def test() -> None:
        (tmp_path / "direct.py").write_text(UPSTREAM)
        async with session_with([sys.executable, str(tmp_path / "direct.py")]) as direct:
            expected_tools = (await direct.list_tools()).tools
            expected = await direct.call_tool(
                "count_rows", {"database": "orders", "table": "invoices"}
            )
        async with proxy(live_api, tmp_path) as session:
            assert (await session.list_tools()).tools == expected_tools
            result = await session.call_tool(
                "count_rows", {"database": "orders", "table": "invoices"}
            )
        assert not result.is_error
        assert result.model_dump() == expected.model_dump()
        assert text_of(result) == "orders.invoices has 87 rows"

    run(test)
    [request] = live_api.engine.service.list_requests()
    assert request.action == "db.count_rows" and request.target == "orders/invoices"
    assert request.parameters == {"database": "orders", "table": "invoices"}
    assert (request.status, request.outcome) == (Status.COMPLETED, "succeeded")
    assert request.credential is not None and request.credential.revoked_at is not None


def test_a_streamable_http_upstream_is_gated_the_same_way(
    live_api: LiveApi, tmp_path: Path
) -> None:
    port = free_port()
    script = tmp_path / "http_upstream.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(EXAMPLE)!r})\n"
        "from inventory_server import server\n"
        f"server.run('streamable-http', host='127.0.0.1', port={port})\n"
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    results: list[types.CallToolResult] = []

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    async def test() -> None:
        url = f"http://127.0.0.1:{port}/mcp"
        async with proxy(live_api, tmp_path, upstream_url=url) as session:
            results.append(
                await session.call_tool("count_rows", {"database": "orders", "table": "sessions"})
            )
            results.append(await session.call_tool("purge", {"database": "orders"}))

    try:
        eventually(listening, timeout=30, interval=0.05, message="the HTTP upstream did not start")
        run(test)
    finally:
        process.terminate()
        process.wait(timeout=10)
    read, purge = results
    assert not read.is_error and text_of(read) == "orders.sessions has 1200 rows"
    assert purge.is_error  # not a tool of this upstream, and denied by policy before that
    [done, denied] = sorted(live_api.engine.service.list_requests(), key=lambda r: r.action)
    assert (done.action, done.outcome) == ("db.count_rows", "succeeded")
    assert (denied.action, denied.status) == ("db.drop_database", Status.DENIED)


def test_a_destructive_call_waits_for_two_approvals_then_runs_with_the_approved_arguments(
    live_api: LiveApi, tmp_path: Path
) -> None:
    service = live_api.engine.service
    arguments = {"database": "orders", "table": "sessions"}
    progress = Progress()
    results: list[types.CallToolResult] = []

    async def test() -> None:
        async with proxy(live_api, tmp_path) as session:

            async def call() -> None:
                results.append(
                    await session.call_tool("drop_table", arguments, progress_callback=progress)
                )

            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await progress.first.wait()
                request_id = progress.request_id()
                assert service.get(request_id).status is Status.PENDING
                for approver in (ALICE, BOB):
                    await anyio.to_thread.run_sync(
                        lambda a=approver: service.vote(
                            request_id, a, Vote.APPROVE, now=now(), confirmation="orders/sessions"
                        )
                    )

    run(test)
    [result] = results
    assert "0/2 approvals" in progress.messages[0]
    request = service.get(progress.request_id())
    assert request.rule == "prod-destructive" and request.parameters == arguments
    assert (request.status, request.outcome) == (Status.COMPLETED, "succeeded")
    assert request.credential is not None
    # The upstream ran with the approved arguments and this request's credential.
    assert not result.is_error
    assert text_of(result) == f"dropped orders.sessions (credential {request.credential.jti})"


def test_a_destructive_call_runs_after_two_signed_slack_clicks(
    db: Database, tmp_path: Path
) -> None:
    arguments = {"database": "orders", "table": "invoices"}
    progress = Progress()
    results: list[types.CallToolResult] = []
    with slack_live(db, tmp_path) as live:
        service = live.engine.service
        key = AgentRegistry(service).add("mcp-bot", "olga@example.com", by="test", now=now())

        def click_twice(request_id: str) -> None:
            card = live.card(request_id)
            for user in ("U0ALICE", "U0BOB"):
                assert live.sim.click(APPROVE, request_id, user, message=card).status_code == 200

        async def test() -> None:
            async with proxy_to(live.url, key, tmp_path, "60s") as session:

                async def call() -> None:
                    results.append(
                        await session.call_tool("drop_table", arguments, progress_callback=progress)
                    )

                async with anyio.create_task_group() as group:
                    group.start_soon(call)
                    await progress.first.wait()
                    await anyio.to_thread.run_sync(click_twice, progress.request_id())

        run(test)
        request = service.get(progress.request_id())
    [result] = results
    assert sorted((v.slack_user_id, v.vote) for v in request.votes) == [
        ("U0ALICE", "approve"),
        ("U0BOB", "approve"),
    ]
    assert request.parameters == arguments and request.outcome == "succeeded"
    assert request.credential is not None
    assert text_of(result) == f"dropped orders.invoices (credential {request.credential.jti})"


def test_a_denied_call_is_a_tool_error_with_the_reason(live_api: LiveApi, tmp_path: Path) -> None:
    service = live_api.engine.service
    progress = Progress()
    results: list[types.CallToolResult] = []

    async def test() -> None:
        async with proxy(live_api, tmp_path) as session:
            # Denied by policy at once ("*" maps purge to db.drop_database).
            results.append(await session.call_tool("purge", {"database": "orders"}))

            async def call() -> None:
                results.append(
                    await session.call_tool(
                        "drop_table",
                        {"database": "orders", "table": "x"},
                        progress_callback=progress,
                    )
                )

            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await progress.first.wait()
                await anyio.to_thread.run_sync(
                    lambda: service.vote(
                        progress.request_id(),
                        ALICE,
                        Vote.DENY,
                        now=now(),
                        reason="not during the sale",
                    )
                )

    run(test)
    by_policy, by_approver = results
    assert by_policy.is_error and "denied" in text_of(by_policy)
    assert "Dropping a production database is never automated" in text_of(by_policy)
    assert by_approver.is_error and "denied" in text_of(by_approver)
    assert "not during the sale" in text_of(by_approver)
    assert service.get(progress.request_id()).status is Status.DENIED


def test_a_call_still_pending_at_the_timeout_is_cancelled(
    live_api: LiveApi, tmp_path: Path
) -> None:
    progress = Progress()
    results: list[types.CallToolResult] = []

    async def test() -> None:
        async with proxy(live_api, tmp_path, timeout="2s") as session:
            results.append(
                await session.call_tool(
                    "drop_table",
                    {"database": "orders", "table": "sessions"},
                    progress_callback=progress,
                )
            )

    run(test)
    [result] = results
    assert result.is_error and "cancelled" in text_of(result)
    assert progress.messages  # notified while it waited
    assert live_api.engine.service.get(progress.request_id()).status is Status.CANCELLED


def test_a_call_the_client_abandons_while_pending_is_cancelled(
    live_api: LiveApi, tmp_path: Path
) -> None:
    service = live_api.engine.service
    progress = Progress()

    async def test() -> None:
        async with proxy(live_api, tmp_path) as session:
            # The client gives up after 3 s and sends notifications/cancelled.
            with pytest.raises(MCPError):
                await session.call_tool(
                    "drop_table",
                    {"database": "orders", "table": "sessions"},
                    read_timeout_seconds=3,
                    progress_callback=progress,
                )
            with anyio.fail_after(20):
                while service.get(progress.request_id()).status is Status.PENDING:
                    await anyio.sleep(0.1)

    run(test)
    assert service.get(progress.request_id()).status is Status.CANCELLED


def test_the_upstream_dying_mid_call_completes_the_request_as_failed(
    live_api: LiveApi, tmp_path: Path
) -> None:
    results: list[types.CallToolResult] = []

    async def test() -> None:
        async with proxy(live_api, tmp_path) as session:
            results.append(await session.call_tool("crash", {"reason": "test"}))

    run(test)
    [result] = results
    assert result.is_error and "upstream" in text_of(result)
    [request] = live_api.engine.service.list_requests()
    assert (request.status, request.outcome) == (Status.COMPLETED, "failed")
    assert request.credential is not None and request.credential.revoked_at is not None


def test_defaults_the_call_left_out_are_approved_and_sent_as_the_upstream_declares_them(
    live_api: LiveApi, tmp_path: Path
) -> None:
    """The model omits arguments the tool's schema defaults (top level and inside an object):
    the request's parameters carry those defaults, the target is built from them, and the
    upstream runs with exactly those values, also after it changed a default and said so."""
    results: list[types.CallToolResult] = []

    async def test() -> None:
        async with proxy(live_api, tmp_path) as session:
            call = {"database": "orders", "options": {"level": 9}}
            results.append(await session.call_tool("archive", call))
            results.append(await session.call_tool("retune", {"keep_days": 7}))
            results.append(await session.call_tool("archive", call))

    run(test)
    first, retuned, second = results
    assert not first.is_error and not retuned.is_error and not second.is_error, results
    service = live_api.engine.service
    archives = [r for r in service.list_requests() if r.action == "db.archive"]
    by_keep = {r.parameters["keep_days"]: r for r in archives}
    assert sorted(by_keep) == [7, 30]
    for keep, result in ((30, first), (7, second)):
        request = by_keep[keep]
        expected = {
            "database": "orders",
            "table": "sessions",
            "keep_days": keep,
            "options": {"compress": True, "level": 9},
        }
        assert request.parameters == expected
        assert request.target == "orders/sessions"
        assert json.loads(text_of(result)) == expected  # what the upstream ran with
        assert (request.status, request.outcome) == (Status.COMPLETED, "succeeded")


def test_an_upstream_call_past_the_call_timeout_is_abandoned_and_completed_as_failed(
    live_api: LiveApi, tmp_path: Path
) -> None:
    results: list[types.CallToolResult] = []

    async def test() -> None:
        async with proxy(live_api, tmp_path, call_timeout="2s") as session:
            results.append(await session.call_tool("hang", {"seconds": WAIT_LIMIT * 2}))
            # The session still serves calls afterwards.
            results.append(
                await session.call_tool("count_rows", {"database": "orders", "table": "invoices"})
            )

    run(test)
    hung, after = results
    assert hung.is_error and "upstream call timed out after 2 s" in text_of(hung)
    assert not after.is_error
    [request] = [r for r in live_api.engine.service.list_requests() if r.action == "db.hang"]
    assert (request.status, request.outcome) == (Status.COMPLETED, "failed")
    assert request.outcome_detail == "upstream call timed out after 2 s"
    assert request.credential is not None and request.credential.revoked_at is not None


@pytest.mark.parametrize("stop", ["stdin closed", "SIGTERM"])
def test_a_proxy_stopped_with_calls_in_flight_leaves_no_request_open(
    live_api: LiveApi, tmp_path: Path, stop: str
) -> None:
    """While one call runs upstream with a claimed credential and another waits for approval,
    the MCP client goes away (its stdin closes, no notifications/cancelled) or the proxy is
    told to stop (SIGTERM, its stdin still open): the proxy withdraws both (the credential
    completed as aborted, which revokes it; the pending request cancelled) and exits."""
    service = live_api.engine.service
    command = proxy_command(live_api.url, tmp_path, "60s")
    exit_codes: list[int | None] = []

    def status_of(action: str) -> Status | None:
        found = [r.status for r in service.list_requests() if r.action == action]
        return found[0] if found else None

    async def test() -> None:
        async with await anyio.open_process(
            command,
            cwd=str(ROOT),
            env={**os.environ, "STEPUP_AGENT_KEY": live_api.agent_key},
            stderr=subprocess.DEVNULL,
        ) as process:
            assert process.stdin is not None
            calls = [
                ("hang", {"seconds": WAIT_LIMIT * 2}),
                ("drop_table", {"database": "orders", "table": "sessions"}),
            ]
            messages: list[dict[str, object]] = [
                {
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "test", "version": "0"},
                    },
                },
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
            ]
            messages += [
                {
                    "jsonrpc": "2.0",
                    "id": n,
                    "method": "tools/call",
                    "params": {"name": name, "arguments": arguments},
                }
                for n, (name, arguments) in enumerate(calls, start=1)
            ]
            for message in messages:
                await process.stdin.send((json.dumps(message) + "\n").encode())
            while status_of("db.hang") is not Status.ACTIVE or status_of("db.drop_table") is None:
                await anyio.sleep(0.1)
            assert status_of("db.drop_table") is Status.PENDING
            if stop == "SIGTERM":
                process.terminate()
            else:
                await process.stdin.aclose()  # the client is gone
            exit_codes.append(await process.wait())

    run(test)
    assert exit_codes == [0]
    hung = next(r for r in service.list_requests() if r.action == "db.hang")
    assert (hung.status, hung.outcome) == (Status.COMPLETED, "aborted")
    assert hung.credential is not None and hung.credential.revoked_at is not None
    assert status_of("db.drop_table") is Status.CANCELLED


def test_argument_values_must_be_stepup_names_and_unmapped_tools_are_refused(
    live_api: LiveApi, tmp_path: Path
) -> None:
    results: list[types.CallToolResult] = []

    async def test() -> None:
        async with proxy(live_api, tmp_path) as session:
            results.append(
                await session.call_tool("count_rows", {"database": "orders", "table": "a b"})
            )
            results.append(
                await session.call_tool(
                    "drop_table", {"database": "orders", "table": "x", "auth_token": "forged"}
                )
            )

    run(test)
    bad_name, forged = results
    assert bad_name.is_error and "space U+0020" in text_of(bad_name)
    assert forged.is_error and "auth_token" in text_of(forged)
    assert live_api.engine.service.list_requests() == []


def test_the_tools_file_refuses_unmapped_tools_and_prefers_exact_names() -> None:
    tools = parse_tools(
        {
            "tools": {
                "db_*": {
                    "action": "db.{tool}",
                    "action_class": "write",
                    "target": "{db}",
                    "environment": "staging",
                },
                "db_read": {
                    "action": "db.read",
                    "action_class": "read",
                    "target": "{db}",
                    "environment": "staging",
                },
            }
        }
    )
    with pytest.raises(MappingRefused, match="not in the proxy's tools file"):
        tools.intent("other", {})
    assert tools.intent("db_read", {"db": "orders"}).action_class == "read"
    wide = tools.intent("db_write", {"db": "orders"})
    assert (wide.action, wide.target) == ("db.db_write", "orders")
    with pytest.raises(MappingRefused, match="missing"):
        tools.intent("db_write", {})
    with pytest.raises(ValueError, match="action_class"):
        parse_tools(
            {
                "tools": {
                    "x": {"action": "a", "action_class": "admin", "target": "t", "environment": "e"}
                }
            }
        )


def test_init_tools_prints_a_tools_file_from_the_annotations(tmp_path: Path) -> None:
    import yaml

    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "mcp-proxy",
            "--init-tools",
            "--",
            sys.executable,
            str(EXAMPLE / "inventory_server.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_LIMIT,
        check=True,
    ).stdout
    tools = yaml.safe_load(printed)["tools"]
    assert {name: entry["action_class"] for name, entry in tools.items()} == {
        "count_rows": "read",
        "drop_table": "destructive",
    }
    parse_tools(yaml.safe_load(printed))  # a valid tools file as printed


def test_the_example_client_configuration_runs_the_proxy_on_the_example() -> None:
    import json

    config = json.loads((EXAMPLE / "claude_desktop_config.json").read_text())
    args = config["mcpServers"]["inventory"]["args"]
    assert args[0] == "mcp-proxy" and args[args.index("--tools") + 1].endswith("tools.yaml")
    assert args[-1].endswith("examples/mcp/inventory_server.py")
    parse_tools(__import__("yaml").safe_load((EXAMPLE / "tools.yaml").read_text()))
