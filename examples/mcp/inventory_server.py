"""A small MCP server to put behind `stepup mcp-proxy`: one read tool, one destructive tool.

    .venv/bin/python examples/mcp/inventory_server.py        # speaks MCP on stdio

`drop_table` receives the stepup credential in `auth_token` (the tools file says so); a real
server would verify it with `stepup_client.resource` before acting. This one only shows the
credential's id (`jti`) so you can match it with the request in stepup's audit log.
"""

from __future__ import annotations

import base64
import json

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

TABLES: dict[str, dict[str, int]] = {"orders": {"sessions": 1200, "invoices": 87}}

server = MCPServer("inventory")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def count_rows(database: str, table: str) -> str:
    """Count the rows of a table."""
    rows = TABLES.get(database, {}).get(table)
    if rows is None:
        raise ValueError(f"no table {database}.{table}")
    return f"{database}.{table} has {rows} rows"


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def drop_table(database: str, table: str, auth_token: str = "") -> str:
    """Drop a table. Needs a stepup credential (filled in by the proxy)."""
    if not auth_token:
        raise ValueError("refused: no credential")
    if TABLES.get(database, {}).pop(table, None) is None:
        raise ValueError(f"no table {database}.{table}")
    return f"dropped {database}.{table} (credential {_jti(auth_token)})"


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims.get("jti", "?"))


if __name__ == "__main__":
    server.run()
