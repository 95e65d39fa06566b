"""``stepup mcp-proxy``: an MCP server that gates one upstream MCP server's tool calls."""
