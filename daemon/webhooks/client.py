"""aiohttp's side of a webhook POST (`poster.py`): the guarded resolver, the session, one POST.

Imported by `Poster` at its first POST, so a daemon that never delivers a webhook never loads
aiohttp and yarl (≈ 7 MiB).
"""

from __future__ import annotations

import socket

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from daemon.webhooks.safety import check_addresses

ClientError = aiohttp.ClientError


class GuardedResolver(AbstractResolver):
    """The system's resolver, refusing names with an address postroom does not post to."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._resolver = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        check_addresses(host, [r["host"] for r in found], self._allow_private)
        return found

    async def close(self) -> None:
        await self._resolver.close()


def session(timeout: float, allow_private: bool, max_connections: int) -> aiohttp.ClientSession:
    """A session whose every new connection resolves through `GuardedResolver`."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private), limit=max_connections, ttl_dns_cache=10,
        keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False,
                                 timeout=aiohttp.ClientTimeout(total=timeout))


def raw_host(url: str) -> str:
    """The host aiohttp connects to, as it parses the URL."""
    return yarl.URL(url).raw_host or ""


async def post(client: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes,
               max_response: int) -> tuple[int, bytes]:
    """POST without following a redirect; the status and at most `max_response` bytes of the
    answer (leaving the rest unread closes the connection)."""
    async with client.post(url, data=body, headers=headers,
                           allow_redirects=False) as response:
        read = bytearray()
        while len(read) < max_response:
            chunk = await response.content.read(max_response - len(read))
            if not chunk:
                break
            read += chunk
        return response.status, bytes(read)
