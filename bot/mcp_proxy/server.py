"""The proxy's MCP server on stdio, in front of one upstream MCP server (a stdio command or a
Streamable HTTP endpoint)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import anyio
import anyio.lowlevel
import mcp_types as types
import yaml
from mcp import ClientSession, StdioServerParameters, stdio_client, stdio_server
from mcp.client.session import IncomingMessage, MessageHandlerFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server

from bot.mcp_proxy.gate import Gate, refusal


@dataclass(frozen=True)
class Upstream:
    """The upstream MCP server: a stdio command, or a Streamable HTTP endpoint's URL."""

    command: tuple[str, ...] = ()
    url: str | None = None


class ToolSchemas:
    """The upstream's tools' input schemas, listed once and again after the upstream says its
    list changed (``notifications/tools/list_changed``)."""

    def __init__(self) -> None:
        self._schemas: dict[str, dict[str, Any]] = {}
        self._stale = True
        self._lock = anyio.Lock()

    async def on_message(self, message: IncomingMessage) -> None:
        """The upstream session's message handler."""
        if isinstance(message, types.ToolListChangedNotification):
            self._stale = True
        await anyio.lowlevel.checkpoint()

    async def input_schema(self, upstream: ClientSession, tool: str) -> dict[str, Any] | None:
        """The tool's input schema, or None for a tool the upstream does not list."""
        async with self._lock:
            if self._stale:
                self._stale = False  # a change announced while listing marks it stale again
                try:
                    tools = await list_all_tools(upstream)
                except BaseException:
                    self._stale = True
                    raise
                self._schemas = {t.name: t.input_schema for t in tools}
            return self._schemas.get(tool)


async def list_all_tools(upstream: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        page = await upstream.list_tools(
            params=None if cursor is None else types.PaginatedRequestParams(cursor=cursor)
        )
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools


@asynccontextmanager
async def upstream_session(
    upstream: Upstream, on_message: MessageHandlerFnT | None = None
) -> AsyncIterator[ClientSession]:
    if upstream.url is not None:
        async with (
            streamable_http_client(upstream.url) as (read, write),
            ClientSession(read, write, message_handler=on_message) as session,
        ):
            await session.initialize()
            yield session
        return
    command = list(upstream.command)
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        yield session


def build_server(gate: Gate, upstream: ClientSession, schemas: ToolSchemas) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return await upstream.list_tools(params=params)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        token = (ctx.meta or {}).get("progress_token")

        async def progress(waited: float, message: str) -> None:
            assert token is not None
            await ctx.session.send_progress_notification(
                token, waited, message=message, related_request_id=_text(ctx.request_id)
            )

        async def call_upstream(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
            return await upstream.call_tool(name, arguments)

        try:
            input_schema = await schemas.input_schema(upstream, params.name)
        except Exception as exc:  # without the schema, the defaults the upstream adds are unknown
            return refusal(f"stepup: the call was not run: the upstream's tools: {exc}")
        return await gate.call(
            params.name,
            params.arguments or {},
            call_upstream,
            progress if token is not None else None,
            input_schema,
        )

    return Server("stepup-mcp-proxy", on_list_tools=list_tools, on_call_tool=call_tool)


def _text(request_id: object) -> str | None:
    return None if request_id is None else str(request_id)


async def serve(gate: Gate, upstream_server: Upstream) -> None:
    """Serves until the client closes stdin, or SIGTERM / SIGINT: either way calls in flight
    are cancelled and withdraw their requests (a claimed credential is reported as aborted),
    and the outcome reports of calls that succeeded are all sent, before the upstream is
    stopped."""
    schemas = ToolSchemas()
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signal, group.cancel_scope)
        async with upstream_session(upstream_server, schemas.on_message) as upstream:
            server = build_server(gate, upstream, schemas)
            async with gate.reports.open():  # outcome reports still in flight are sent first
                with _stdin() as stdin:
                    async with stdio_server(stdin=stdin) as (read, write):
                        await server.run(read, write, server.create_initialization_options())
        group.cancel_scope.cancel()  # done: stop watching for signals


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


class _PipeLines:
    """The process's stdin, line by line, read without a thread: wait until the pipe is
    readable, then read what is there. A cancel (SIGTERM) stops it at once. (The SDK reads
    stdin in a worker thread that a cancel waits for, so a proxy told to stop would hang until
    its client wrote a line or closed stdin; and a thread hand-off per message costs
    milliseconds on a loaded machine.)"""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lines: list[bytes] = []
        self._pending = b""
        self._eof = False

    def __aiter__(self) -> _PipeLines:
        return self

    async def __anext__(self) -> str:
        while not self._lines:
            if self._eof:
                if self._pending:
                    self._lines.append(self._pending)
                    self._pending = b""
                    break
                raise StopAsyncIteration
            await anyio.wait_readable(self._fd)
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                self._eof = True
                continue
            *lines, self._pending = (self._pending + chunk).split(b"\n")
            self._lines.extend(lines)
        return self._lines.pop(0).decode("utf-8", "replace")


@contextlib.contextmanager
def _stdin() -> Iterator[anyio.AsyncFile[str] | None]:
    """Our reader over stdin when it is a pipe or a socket (it always is under an MCP client),
    else None: the SDK's own."""
    fd = sys.stdin.fileno()
    kind = os.fstat(fd).st_mode
    if sys.platform == "win32" or not (stat.S_ISFIFO(kind) or stat.S_ISSOCK(kind)):
        yield None
        return
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        yield cast(anyio.AsyncFile[str], _PipeLines(fd))
    finally:
        os.set_blocking(fd, blocking)


def _action_class(tool: types.Tool) -> str:
    """The upstream's own hints are untrusted: destructive wins, read only when nothing else
    is claimed."""
    hints = tool.annotations
    if hints is not None and hints.destructive_hint:
        return "destructive"
    if hints is not None and hints.read_only_hint:
        return "read"
    return "write"


_PLAIN_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # no glob character: never a catch-all


async def initial_tools_file(upstream_server: Upstream) -> str:
    """A starting tools file from the upstream's tool list, to edit."""
    async with upstream_session(upstream_server) as upstream:
        tools = await list_all_tools(upstream)
    skipped = [tool.name for tool in tools if not _PLAIN_TOOL_NAME.fullmatch(tool.name)]
    entries = {
        tool.name: {
            "action": f"mcp.{tool.name}",
            "action_class": _action_class(tool),
            "target": "mcp",
            "environment": "production",
        }
        for tool in tools
        if _PLAIN_TOOL_NAME.fullmatch(tool.name)
    }
    header = (
        "# stepup mcp-proxy tools file: edit action, target (templates over the call's\n"
        "# arguments: {argname}, {tool}) and environment. Unlisted tools are refused.\n"
    )
    if skipped:  # a name like "*" would map every unlisted tool: left for a human to write
        header += (
            "# left out (not a plain tool name; map them by hand if at all): "
            + ", ".join(repr(name)[:80] for name in skipped)
            + "\n"
        )
    return header + yaml.safe_dump({"tools": entries}, sort_keys=False)
