"""How the MCP tools reach the mailbox: calls of postroom's own HTTP API with the agent's key.

No second path to the database: a tool asks the API exactly as an agent's code would, so the
scoping (another agent's id answers 404), the limits and the errors are the API's. Over the
streamable HTTP endpoint the calls go straight into the daemon's own ASGI app (no socket, the
caller's key passed on); over stdio to the daemon's URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

# A long poll of the API holds a request up to 30 s: the client waits a little longer.
_TIMEOUT = httpx.Timeout(45.0, connect=10.0)


class ApiRefusal(Exception):
    """The API said no: its status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class ApiCalls:
    """The API, as one agent (the key given) sees it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @classmethod
    def over_asgi(cls, app: Any, authorization: str) -> ApiCalls:
        """Calls into the ASGI app `app` itself, with the request's own Authorization."""
        return cls(httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://postroom.internal", timeout=_TIMEOUT,
                                     headers={"Authorization": authorization}))

    @classmethod
    def over_http(cls, base_url: str, api_key: str) -> ApiCalls:
        return cls(httpx.AsyncClient(base_url=base_url, timeout=_TIMEOUT,
                                     headers={"Authorization": f"Bearer {api_key}"}))

    async def close(self) -> None:
        await self._client.aclose()

    async def _send(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                    json: Any = None) -> httpx.Response:
        try:
            r = await self._client.request(method, path, params=params, json=json)
        except httpx.HTTPError as e:
            raise ApiRefusal(503, "unreachable", f"the postroom API did not answer: "
                             f"{type(e).__name__}") from None
        if r.status_code >= 400:
            try:
                error = r.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", f"HTTP {r.status_code}"
            raise ApiRefusal(r.status_code, code, message)
        return r

    async def get(self, path: str, **params: Any) -> Any:
        found = {k: v for k, v in params.items() if v is not None}
        return (await self._send("GET", path, params=found)).json()

    async def post(self, path: str, body: Any = None) -> Any:
        return (await self._send("POST", path, json=body)).json()

    async def text(self, path: str, **params: Any) -> tuple[str, bool]:
        """A text answer and whether the API says it was truncated."""
        r = await self._send("GET", path, params={k: v for k, v in params.items()
                                                   if v is not None})
        return r.text, r.headers.get("x-text-truncated") == "true"
