"""`postroom mcp`: the same tools over stdio, for MCP clients that start their servers as
commands. The key comes from `POSTROOM_API_KEY`; the tools call the daemon's HTTP API at
`base_url` (a running `postroom serve`)."""

from __future__ import annotations

from daemon.mcp.calls import ApiCalls
from daemon.mcp.tools import build_server


def serve_stdio(base_url: str, api_key: str) -> None:
    """Serve MCP on stdin/stdout until the client closes them."""
    server = build_server(lambda: ApiCalls.over_http(base_url, api_key))
    server.run("stdio")
