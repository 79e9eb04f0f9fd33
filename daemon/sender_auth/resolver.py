"""DNS for sender authentication: one dnspython resolver, a TTL-honouring LRU cache, bounded
concurrency, and our own two failure kinds.

Every lookup of SPF, DKIM, DMARC and ARC goes through `DnsSession.query`, which turns dnspython's
exceptions into `DnsTempError` (timeout, SERVFAIL, budget spent: the answer may come later) or
`DnsPermError` (CNAME loop, bad name, too many lookups: it never will), and NXDOMAIN or an empty
answer into `[]`. Nothing here reads the environment or sets dnspython's process-wide default
resolver; the libraries are handed our functions instead (see `dkim_check`, `spf_check`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

import dns.exception
import dns.message
import dns.nameserver
import dns.resolver

from daemon.clock import SYSTEM, Clock

DEFAULT_CACHE_SIZE = 50_000
DEFAULT_CONCURRENCY = 32


class DnsTempError(Exception):
    """No answer now (timeout, SERVFAIL, the message's DNS budget spent): a `temperror`.

    Not a subclass of any library's exception, so dkimpy's and pyspf's own `except` clauses let
    it through to us."""


class DnsPermError(Exception):
    """An answer that will not get better (CNAME loop, malformed name, too many lookups for one
    message, a key record over its limits): a `permerror`."""


def parse_nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    """`"1.2.3.4"`, `"1.2.3.4:5353"`, `"::1"` or `"[::1]:5353"` as a nameserver (port 53 unless
    given); dnspython itself takes no port in the string."""
    text = text.strip()
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?", text)
    if bracketed:
        return dns.nameserver.Do53Nameserver(bracketed.group(1), int(bracketed.group(2) or 53))
    if text.count(":") == 1:
        host, port = text.split(":")
        return dns.nameserver.Do53Nameserver(host, int(port))
    return dns.nameserver.Do53Nameserver(text, 53)


class Resolver:
    """The process's DNS for verification: shared by every message and thread.

    `servers` empty means the system's resolvers (/etc/resolv.conf; none there gives a resolver
    that answers every lookup with `DnsTempError`, never an exception at start). `timeout` bounds
    one lookup; answers (positive and negative) are cached for their TTL in a bounded LRU
    cache; at most `max_concurrency` lookups are in flight at once, across threads.
    """

    def __init__(self, servers: Sequence[str] = (), timeout: float = 2.0, *,
                 cache_size: int = DEFAULT_CACHE_SIZE,
                 max_concurrency: int = DEFAULT_CONCURRENCY, clock: Clock = SYSTEM) -> None:
        if servers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [parse_nameserver(s) for s in servers]
        else:
            try:
                resolver = dns.resolver.Resolver()
            except dns.exception.DNSException:  # no resolv.conf: every lookup a temperror
                resolver = dns.resolver.Resolver(configure=False)
                resolver.nameservers = []
        resolver.search, resolver.use_search_by_default = [], False
        resolver.timeout = resolver.lifetime = timeout
        resolver.use_edns(0, 0, 1232)  # a 4096-bit key record then fits one UDP answer
        resolver.cache = dns.resolver.LRUCache(cache_size)
        self._resolver = resolver
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self.timeout = timeout
        self.clock = clock

    def session(self, *, budget: float | None = None, max_lookups: int = 100) -> DnsSession:
        """A per-message view: its own deadline (`budget` seconds, default 5 × `timeout`), lookup
        count and remembered failures."""
        seconds = 5 * self.timeout if budget is None else budget
        return DnsSession(self, self.clock.monotonic() + seconds, max_lookups)

    def resolve(self, name: str, rdtype: str, lifetime: float) -> list[Any]:
        """The rdatas of `name`/`rdtype` (`[]` for NXDOMAIN or no data), within `lifetime`."""
        started = self.clock.monotonic()
        if not self._slots.acquire(timeout=lifetime):
            raise DnsTempError(f"{name}/{rdtype}: too many lookups in flight")
        try:
            left = max(0.001, lifetime - (self.clock.monotonic() - started))
            answer = self._resolver.resolve(name, rdtype, raise_on_no_answer=False,
                                            lifetime=left, search=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.resolver.NoNameservers as e:  # SERVFAIL/REFUSED, or every answer unusable
            errors = e.kwargs.get("errors") or []
            if errors and all(isinstance(x[3], dns.message.ChainTooLong) for x in errors):
                raise DnsPermError(f"{name}/{rdtype}: CNAME chain too long") from None
            raise DnsTempError(f"{name}/{rdtype}: no server answered") from None
        except dns.exception.Timeout:
            raise DnsTempError(f"{name}/{rdtype}: timed out") from None
        except (dns.exception.DNSException, ValueError) as e:  # YXDOMAIN, a label too long …
            raise DnsPermError(f"{name}/{rdtype}: {type(e).__name__}") from None
        finally:
            self._slots.release()
        return list(answer.rrset) if answer.rrset is not None else []


class DnsSession:
    """One verification's DNS: a deadline shared by all its lookups, a cap on their number,
    and its failures remembered so that ten signatures at one dead selector wait once."""

    def __init__(self, resolver: Resolver, deadline: float, max_lookups: int) -> None:
        self.resolver = resolver
        self.deadline = deadline
        self.max_lookups = max_lookups
        self.lookups = 0
        self._failed: dict[tuple[str, str], Exception] = {}

    def remaining(self) -> float:
        """Seconds left of this verification's DNS budget (never below 0)."""
        return max(0.0, self.deadline - self.resolver.clock.monotonic())

    def query(self, name: str, rdtype: str) -> list[Any]:
        """Like `Resolver.resolve`, within this session's budget and lookup cap."""
        key = (name.lower().rstrip("."), rdtype)
        if key in self._failed:
            raise self._failed[key]
        self.lookups += 1
        if self.lookups > self.max_lookups:
            raise DnsPermError(f"more than {self.max_lookups} DNS lookups for one message")
        left = self.remaining()
        if left <= 0:
            raise DnsTempError("the message's DNS budget is spent")
        try:
            return self.resolver.resolve(name, rdtype, min(self.resolver.timeout, left))
        except (DnsTempError, DnsPermError) as e:
            self._failed[key] = e
            raise

    def txt(self, name: str) -> list[bytes]:
        """Each TXT record at `name`, its strings joined."""
        return [b"".join(r.strings) for r in self.query(name, "TXT")]
