"""postroom as an MCP server (SPEC §16): the agent's mailbox as tools for its model, over
streamable HTTP at `/mcp` on the API port and over stdio (`postroom mcp`), built on the
official `mcp` SDK. Every tool is a call of the HTTP API with the agent's own key
(`calls.py`), so scoping and errors are the API's."""

from daemon.mcp.calls import ApiCalls, ApiRefusal
from daemon.mcp.http import PATH, McpEndpoint
from daemon.mcp.stdio import serve_stdio
from daemon.mcp.tools import INSTRUCTIONS, TEXT_CHARS, build_server

__all__ = [
    "INSTRUCTIONS",
    "PATH",
    "TEXT_CHARS",
    "ApiCalls",
    "ApiRefusal",
    "McpEndpoint",
    "build_server",
    "serve_stdio",
]
