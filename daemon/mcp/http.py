"""`/mcp` on the API port (SPEC §16): streamable HTTP, the agent's API key as a Bearer token.

A request without a key the API accepts answers 401 with the API's error body before the SDK
sees it; one that passes carries its Authorization on to the tools' API calls (a contextvar,
which the SDK hands to the tool it runs), so the tools see exactly what that agent may see.
Stateless and JSON-answering: no session to keep between calls, any node answers any request.
The SDK's DNS-rebinding protection answers 421 to a Host that is not one of `hosts`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.responses import JSONResponse

from daemon.mcp.calls import ApiCalls
from daemon.mcp.tools import build_server

PATH = "/mcp"
_AUTHORIZATION: ContextVar[str] = ContextVar("postroom_mcp_authorization")

Check = Any  # async (authorization header value) -> bool: whether the API takes the key


class McpEndpoint:
    """The ASGI app at `/mcp`, and the session manager the app's lifespan must run."""

    def __init__(self, app: Any, check: Check, hosts: Sequence[str]) -> None:
        def calls() -> ApiCalls:
            return ApiCalls.over_asgi(app, _AUTHORIZATION.get())

        self.server = build_server(calls)
        origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
        self._inner = self.server.streamable_http_app(
            streamable_http_path=PATH, stateless_http=True, json_response=True,
            transport_security=TransportSecuritySettings(
                enable_dns_rebinding_protection=True, allowed_hosts=list(hosts),
                allowed_origins=origins))
        self._check = check

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        headers = [(k.lower(), v) for k, v in scope.get("headers", [])]
        given = [v.decode("latin-1") for k, v in headers if k == b"authorization"]
        if len(given) != 1 or not await self._check(given[0]):
            answer = JSONResponse({"error": {"code": "unauthorized",
                                             "message": "a valid API key as Bearer token"}},
                                  status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await answer(scope, receive, send)
            return
        token = _AUTHORIZATION.set(given[0])
        try:
            await self._inner(scope, receive, send)
        finally:
            _AUTHORIZATION.reset(token)
