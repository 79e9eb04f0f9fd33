"""A bound on HTTP request bodies, enforced before any route (or authentication) reads them.

A declared Content-Length over the limit is refused at once; a chunked body is counted as it
arrives and cut off at the limit. Either way the client gets 413 with the API's error body.
Upload routes are the exception: they are named with a limit of their own and get their body
streamed, never buffered here, since they must spool files far larger than a JSON request; a
declared length over their limit is still refused at once, and the route bounds what it reads.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class StreamedRoute:
    """Requests of `method` on `path` (or, when it ends in "/", any path under it) pass
    through unbuffered, refused only when they declare a body over `max_bytes`."""

    method: str
    path: str
    max_bytes: int

    def matches(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        return scope.get("method") == self.method and (
            path == self.path or (self.path.endswith("/") and path.startswith(self.path)))


@dataclass(frozen=True)
class LargerBody(StreamedRoute):
    """Requests of `method` on `path` whose bodies are buffered like any other, under their own
    bound `max_bytes` instead of http.max_body (a message to send carries its text)."""


class BodyLimit:
    """ASGI middleware: request bodies above `max_bytes` answer 413.

    The body is read here, bounded, and handed to the app in one piece: FastAPI would turn an
    error raised while it reads into a 400, and the limit must hold before authentication runs.
    `streamed` routes are left to read their own bodies (see the module docstring).
    """

    def __init__(self, app: App, max_bytes: int,
                 streamed: tuple[StreamedRoute, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed

    async def _refuse(self, send: Send, limit: int | None = None) -> None:
        limit = self.max_bytes if limit is None else limit
        body = json.dumps({"error": {"code": "too_large",
                                     "message": f"request body over {limit} bytes"}})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body.encode()})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = next((r for r in self.streamed if r.matches(scope)), None)
        limit = self.max_bytes
        if isinstance(route, LargerBody):
            limit, route = route.max_bytes, None
        if route is not None:
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and (not value.isdigit()
                                                  or int(value) > route.max_bytes):
                    await self._refuse(send, route.max_bytes)
                    return
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await self._refuse(send, limit)
                return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await self._refuse(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
