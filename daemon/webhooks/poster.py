"""One POST to an endpoint (SPEC §14): to an address `safety.resolve` allowed, no redirect
followed, at most 4 kB of the answer read, all of it within `webhooks.timeout`.

The request goes to the resolved address with the URL's host in `Host` and as TLS's server
name (httpcore's `sni_hostname`), so the certificate is checked for the name the agent gave.
Each host gets its own small connection pool, so a connection opened for one name is never
reused for another that happens to share its address. The environment's proxy settings are
ignored: a proxy would connect where the check did not look.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

import httpx

from daemon.webhooks.safety import Target, UnsafeUrl, parse_url, resolve

MAX_RESPONSE = 4096
KEPT_RESPONSE = 1024  # of it, what the attempts log keeps
MAX_POOLS = 256


@dataclass(frozen=True)
class Outcome:
    status_code: int | None  # None: no answer
    error: str | None
    response: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Poster:
    """The HTTP client of one node's webhook deliveries."""

    def __init__(self, timeout: float, allow_private: bool, max_connections: int) -> None:
        self._timeout = timeout
        self._allow_private = allow_private
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=8, keepalive_expiry=30)
        self._pools: OrderedDict[Target, httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self, target: Target) -> httpx.AsyncClient:
        client = self._pools.pop(target, None)
        if client is None:
            client = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                       timeout=self._timeout, limits=self._limits)
            while len(self._pools) >= MAX_POOLS:
                _, oldest = self._pools.popitem(last=False)
                task = asyncio.get_running_loop().create_task(oldest.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        self._pools[target] = client  # the most recently used last
        return client

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                return await self._post(url, headers, body, started)
        except TimeoutError:
            return _failed(f"no answer within {self._timeout:g} s", started)
        except UnsafeUrl as e:
            return _failed(str(e), started)
        except httpx.HTTPError as e:
            return _failed(f"{type(e).__name__}: {e}"[:300], started)

    async def _post(self, url: str, headers: dict[str, str], body: bytes,
                    started: float) -> Outcome:
        target = parse_url(url)
        addresses = await resolve(target, self._allow_private, self._timeout)
        request_url = httpx.URL(url).copy_with(host=str(addresses[0]))
        default_port = 443 if target.scheme == "https" else 80
        host = target.host if ":" not in target.host else f"[{target.host}]"
        all_headers = {**headers, "content-type": "application/json",
                       "user-agent": "postroom-webhooks", "accept-encoding": "identity",
                       "host": host if target.port == default_port else f"{host}:{target.port}"}
        client = self._client(target)
        request = client.build_request("POST", request_url, headers=all_headers, content=body,
                                       extensions={"sni_hostname": target.host})
        response = await client.send(request, stream=True)
        try:
            read = bytearray()
            async for chunk in response.aiter_raw():
                read += chunk
                if len(read) >= MAX_RESPONSE:
                    break
        finally:
            await response.aclose()
        text = bytes(read[:KEPT_RESPONSE]).decode("utf-8", "replace") or None
        return Outcome(response.status_code, None, text, _ms(started))

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for client in pools:
            await client.aclose()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _failed(error: str, started: float) -> Outcome:
    return Outcome(None, error, None, _ms(started))
