"""``stepup mcp-proxy``: gate an MCP server's tool calls behind stepup approvals (docs/mcp.md)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import anyio
import typer

from core.durations import parse_duration


def mcp_proxy(
    command: Annotated[
        list[str] | None, typer.Argument(help="The upstream MCP server's command, after --")
    ] = None,
    server: Annotated[
        str | None, typer.Option("--server", help="The stepup server's URL", envvar="STEPUP_URL")
    ] = None,
    tools: Annotated[
        Path | None, typer.Option("--tools", help="The tools file: tool name or glob → intent")
    ] = None,
    timeout: Annotated[
        str, typer.Option("--timeout", help="How long a call waits for approval")
    ] = "30m",
    call_timeout: Annotated[
        str,
        typer.Option(
            "--call-timeout", help="How long the upstream may take to answer once a call runs"
        ),
    ] = "10m",
    agent_token_file: Annotated[
        Path | None,
        typer.Option("--agent-token-file", help="A workload token file, read for every request"),
    ] = None,
    upstream_url: Annotated[
        str | None,
        typer.Option("--upstream-url", help="A Streamable HTTP upstream instead of a command"),
    ] = None,
    init_tools: Annotated[
        bool, typer.Option("--init-tools", help="Print a starting tools file and exit")
    ] = False,
) -> None:
    """An MCP server on stdio in front of one upstream MCP server: every tool call is a stepup
    request (STEPUP_AGENT_KEY or --agent-token-file) and runs only once allowed or approved."""
    if bool(command) == (upstream_url is not None):
        raise typer.BadParameter(
            "give the upstream MCP server's command after --, or --upstream-url"
        )
    from bot.mcp_proxy.server import Upstream

    upstream = Upstream(command=tuple(command or ()), url=upstream_url)
    if init_tools:
        from bot.mcp_proxy.server import initial_tools_file

        typer.echo(anyio.run(initial_tools_file, upstream), nl=False)
        return
    if server is None or tools is None:
        raise typer.BadParameter("--server and --tools are required")
    timeout_seconds = _seconds(timeout, "--timeout")
    call_timeout_seconds = _seconds(call_timeout, "--call-timeout")
    from bot.mcp_proxy.gate import Gate
    from bot.mcp_proxy.mapping import load_tools
    from bot.mcp_proxy.server import serve
    from stepup_client import StepupClient, token_file

    try:
        tools_file = load_tools(tools)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--tools") from None
    key = os.environ.get("STEPUP_AGENT_KEY")
    credential: str | Callable[[], str]
    if agent_token_file is not None:
        credential = token_file(agent_token_file)
    elif key:
        credential = key
    else:
        raise typer.BadParameter("set STEPUP_AGENT_KEY or give --agent-token-file")
    # The credential is handed to another process (the upstream), so binding it to this
    # process's DPoP key would make it unusable there: the proxy asks for bearer tokens.
    with StepupClient(server, credential, dpop=False) as client:
        gate = Gate(client, tools_file, timeout_seconds, call_timeout_seconds)
        anyio.run(serve, gate, upstream)


def _seconds(duration: str, option: str) -> float:
    try:
        return parse_duration(duration).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def register(app: typer.Typer) -> None:
    app.command("mcp-proxy")(mcp_proxy)
