"""Verification as a service of the daemon: `verify` in the verifier process (`worker.py`,
through `VerifierProcess`), or with `in_process` in a pool of threads of the daemon's own. Either
way `concurrency` threads bound it: a slow DNS answer holds one (at most `dns_budget`), never
the event loop, and never more than `concurrency` messages' bytes are in memory for it at once.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.sender_auth.process import VerifierProcess
from daemon.sender_auth.records import Authentication, Limits, Settings
from daemon.sender_auth.resolver import Resolver
from daemon.sender_auth.verify import verify

if TYPE_CHECKING:  # the verifier process does without pydantic and the rest of the config
    from daemon.config import AuthConfig


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


class Verifier:
    """Verification in one process: its resolver (the DNS cache) and settings; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.resolver = Resolver(list(settings.dns_servers), settings.dns_timeout)

    def verify(self, source: Path | bytes | str, client_ip: str | None, helo: str | None,
               mail_from: str) -> Authentication:
        """The verdicts on the message in `source` (its bytes, or a file holding them)."""
        raw, whole = self._read(Path(source) if isinstance(source, str) else source)
        s = self.settings
        return verify(raw, client_ip=client_ip, helo=helo, mail_from=mail_from,
                      authserv_id=s.authserv_id, resolver=self.resolver,
                      trusted_authserv_ids=s.trusted_authserv_ids, limits=s.limits,
                      body_read=whole)

    def _read(self, source: Path | bytes) -> tuple[bytes, bool]:
        """The message, or only its header when it is over `max_message_size` (its body
        would cost memory several times its size in dkimpy): (bytes, whole)."""
        limit = self.settings.max_message_size
        if isinstance(source, bytes):
            if len(source) <= limit:
                return source, True
            return header_of(source[:MAX_HEADER_READ]), False
        with source.open("rb") as f:
            if source.stat().st_size <= limit:
                return f.read(), True
            return header_of(f.read(MAX_HEADER_READ)), False


class SenderAuth:
    """One node's verification, in the verifier process or (`in_process`) in threads."""

    @classmethod
    def of(cls, config: AuthConfig, hostname: str, *,
           in_process: bool = False) -> SenderAuth | None:
        """The verification `[auth]` asks for (its authserv-id defaults to `hostname`); None
        when `auth.enabled` is false."""
        if not config.enabled:
            return None
        settings = Settings(config.authserv_id or hostname, tuple(config.dns_servers),
                            config.dns_timeout, tuple(config.trusted_authserv_ids),
                            Limits(max_signatures=config.max_signatures), config.concurrency,
                            config.max_message_size, config.nice)
        return cls(settings, in_process=in_process)

    def __init__(self, settings: Settings, *, in_process: bool = False) -> None:
        self._process = None if in_process else VerifierProcess(settings)
        self._verifier = Verifier(settings) if in_process else None
        self._threads = ThreadPoolExecutor(max_workers=settings.concurrency,
                                           thread_name_prefix="sender-auth") if in_process else None

    async def start(self) -> None:
        """Start the verifier process now, so the first message does not wait for it."""
        if self._process is not None:
            await self._process.start()

    async def check(self, source: Path | bytes, *, client_ip: str | None, helo: str | None,
                    mail_from: str) -> Authentication:
        """The verdicts on the message in `source` (its raw bytes, or a file holding them);
        never raises for anything the message or DNS does (`verify`'s promise). A verifier
        process that died under it raises TransientError (the job is retried)."""
        if self._process is not None:
            return await self._process.check(
                str(source) if isinstance(source, Path) else source, client_ip, helo, mail_from)
        assert self._verifier is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, self._verifier.verify, source, client_ip, helo, mail_from)

    async def close(self) -> None:
        """Stop taking work; verifications under way are dropped, their results unused."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
        if self._process is not None:
            await self._process.close()
