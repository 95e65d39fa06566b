"""The proxy's MCP server on stdio, in front of one upstream MCP server (a stdio command or a
Streamable HTTP endpoint)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import mcp_types as types
import yaml
from mcp import ClientSession, StdioServerParameters, stdio_client, stdio_server
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server

from bot.mcp_proxy.gate import Gate


@dataclass(frozen=True)
class Upstream:
    """The upstream MCP server: a stdio command, or a Streamable HTTP endpoint's URL."""

    command: tuple[str, ...] = ()
    url: str | None = None


@asynccontextmanager
async def upstream_session(upstream: Upstream) -> AsyncIterator[ClientSession]:
    if upstream.url is not None:
        async with (
            streamable_http_client(upstream.url) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
        return
    command = list(upstream.command)
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def build_server(gate: Gate, upstream: ClientSession) -> Server[Any]:
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

        return await gate.call(
            params.name,
            params.arguments or {},
            call_upstream,
            progress if token is not None else None,
        )

    return Server("stepup-mcp-proxy", on_list_tools=list_tools, on_call_tool=call_tool)


def _text(request_id: object) -> str | None:
    return None if request_id is None else str(request_id)


async def serve(gate: Gate, upstream_server: Upstream) -> None:
    async with upstream_session(upstream_server) as upstream:
        server = build_server(gate, upstream)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


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
        tools: list[types.Tool] = []
        cursor: str | None = None
        while True:
            page = await upstream.list_tools(
                params=None if cursor is None else types.PaginatedRequestParams(cursor=cursor)
            )
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
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
