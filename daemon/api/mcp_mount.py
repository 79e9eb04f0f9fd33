"""`/mcp` mounted without loading the MCP SDK until it is asked for (SPEC §16).

The SDK and what it brings (its types, OpenTelemetry, SSE, its HTTP client) hold about 23 MiB
of a daemon that most deployments never ask for MCP: `LazyMcp` answers `/mcp` by importing
`daemon.mcp`, building its endpoint and starting its session manager at the first request,
once, and stops the session manager with the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

PATH = "/mcp"  # daemon.mcp.PATH, here so that mounting it imports nothing of the SDK


def allowed_hosts(listen: Sequence[str], public_url: str | None) -> list[str]:
    """The Host values `/mcp` answers: every `http.listen` address and `http.public_url`'s
    host (with its port, and without when it is the scheme's default)."""
    hosts = {"127.0.0.1:*", "localhost:*", "[::1]:*"}
    for address in listen:
        host, _, port = address.rpartition(":")
        hosts.update({f"{host}:{port}", f"{host}:*"})
    if public_url:
        parts = urlsplit(public_url)
        if parts.hostname:
            name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            hosts.update({name, f"{name}:*"})
    return sorted(hosts)


class LazyMcp:
    """The ASGI app at `/mcp`: `daemon.mcp.McpEndpoint` made at the first request."""

    def __init__(self, app: Any, check: Callable[[str], Awaitable[bool]],
                 hosts: Sequence[str]) -> None:
        self._args = (app, check, list(hosts))
        self._endpoint: Any = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def _loaded(self) -> Any:
        if self._endpoint is not None:
            return self._endpoint
        async with self._lock:
            if self._endpoint is None:
                from daemon.mcp import McpEndpoint

                endpoint = McpEndpoint(*self._args)
                started = asyncio.Event()

                async def run() -> None:
                    async with endpoint.running():
                        started.set()
                        await self._stop.wait()

                self._runner = asyncio.create_task(run())
                waiting = asyncio.ensure_future(started.wait())
                await asyncio.wait({self._runner, waiting}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                if self._runner.done():  # it failed to start: say why, try again next time
                    runner, self._runner = self._runner, None
                    runner.result()
                    raise RuntimeError("the MCP session manager stopped as it started")
                self._endpoint = endpoint
        return self._endpoint

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        endpoint = await self._loaded()
        await endpoint(scope, receive, send)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The app's lifespan: on its way out, stop the session manager if one started."""
        try:
            yield
        finally:
            self._stop.set()
            if self._runner is not None:
                await self._runner
