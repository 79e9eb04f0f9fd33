"""Verification as a service of the daemon: `verify` in a bounded pool of threads, so a slow
DNS answer holds one thread (at most `dns_budget`), never the event loop, and never more than
`concurrency` messages' bytes are in memory for it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from daemon.config import AuthConfig
from daemon.sender_auth.records import Authentication, Limits
from daemon.sender_auth.resolver import Resolver
from daemon.sender_auth.verify import verify


def local_submission(authserv_id: str, mail_from: str) -> dict[str, Any]:
    """The authentication of mail an agent of this postroom sent to another one (SPEC §12's
    local delivery): the sender proved itself with its API key and may send only from its own
    addresses, so the verdict is `pass` (RFC 8601's `auth` method), with nothing to look up."""
    none = {"result": "none", "domain": None}
    sender = "".join(c for c in mail_from if c.isprintable() and c not in ' ;()"\\')[:320]
    return {"spf": none, "dkim": [], "dmarc": {**none, "policy": None},
            "arc": {"result": "none"}, "verdict": "pass",
            "header": f"{authserv_id}; auth=pass (an agent of this postroom) "
                      f"smtp.mailfrom={sender or '<>'}"}


MAX_HEADER_READ = 1024**2  # of a message too large to read whole: its header, at most this


def header_of(start: bytes) -> bytes:
    """The header section at the start of a message (up to its blank line), with the blank
    line; all of `start` when it holds no blank line."""
    ends = [i for i in (start.find(b"\r\n\r\n"), start.find(b"\n\n")) if i >= 0]
    if not ends:
        return start
    end = min(ends)
    return start[:end] + (b"\r\n\r\n" if start[end:end + 1] == b"\r" else b"\n\n")


class SenderAuth:
    """One node's verifier: its resolver (the DNS cache), settings and threads."""

    @classmethod
    def of(cls, config: AuthConfig, hostname: str) -> SenderAuth | None:
        """The verifier `[auth]` asks for (its authserv-id defaults to `hostname`); None when
        `auth.enabled` is false."""
        if not config.enabled:
            return None
        return cls(Resolver(config.dns_servers, config.dns_timeout),
                   config.authserv_id or hostname,
                   trusted_authserv_ids=config.trusted_authserv_ids,
                   limits=Limits(max_signatures=config.max_signatures),
                   concurrency=config.concurrency, max_message_size=config.max_message_size)

    def __init__(self, resolver: Resolver, authserv_id: str, *,
                 trusted_authserv_ids: Collection[str] = (), limits: Limits | None = None,
                 concurrency: int = 8, max_message_size: int = 4 * 1024**2) -> None:
        self._max_size = max_message_size
        self.resolver = resolver
        self.authserv_id = authserv_id
        self._trusted = tuple(trusted_authserv_ids)
        self._limits = limits or Limits()
        self._threads = ThreadPoolExecutor(max_workers=concurrency,
                                           thread_name_prefix="sender-auth")

    async def check(self, source: Path | bytes, *, client_ip: str | None, helo: str | None,
                    mail_from: str) -> Authentication:
        """The verdicts on the message in `source` (its raw bytes, or a file holding them);
        never raises for anything the message or DNS does (`verify`'s promise)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, self._verify, source, client_ip, helo, mail_from)

    def _verify(self, source: Path | bytes, client_ip: str | None, helo: str | None,
                mail_from: str) -> Authentication:
        raw, whole = self._read(source)
        return verify(raw, client_ip=client_ip, helo=helo, mail_from=mail_from,
                      authserv_id=self.authserv_id, resolver=self.resolver,
                      trusted_authserv_ids=self._trusted, limits=self._limits,
                      body_read=whole)

    def _read(self, source: Path | bytes) -> tuple[bytes, bool]:
        """The message, or only its header when it is over `max_message_size` (its body
        would cost memory several times its size in dkimpy): (bytes, whole)."""
        if isinstance(source, bytes):
            if len(source) <= self._max_size:
                return source, True
            return header_of(source[:MAX_HEADER_READ]), False
        with source.open("rb") as f:
            if source.stat().st_size <= self._max_size:
                return f.read(), True
            return header_of(f.read(MAX_HEADER_READ)), False

    def close(self) -> None:
        """Stop taking work; verifications under way finish in their threads (each bounded by
        its DNS budget), their results unused."""
        self._threads.shutdown(wait=False, cancel_futures=True)
