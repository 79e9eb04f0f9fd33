"""SPF (RFC 7208) for the MAIL FROM and HELO identities, with pyspf over our DNS.

pyspf has no DNS parameter: every query goes through its module global `spf.DNSLookup`. We
replace it once, on import, with `_dns_lookup`, which finds the running verification's
`DnsSession` in a context variable. Each thread (and each `asyncio.to_thread` copy of a context)
sees only the session it set, so verifications may run in many threads at once; pyspf keeps
all other state on its `query` object. A caller of pyspf outside `check_spf` (no session set)
gets pyspf's own lookup, unchanged. pyspf enforces RFC 7208's limits itself: 10 DNS-querying
mechanisms and 2 void lookups, then `permerror`.
"""

from __future__ import annotations

import contextvars
import ipaddress
from typing import Any

import spf

from daemon.sender_auth.message import plausible_domain
from daemon.sender_auth.records import SpfResult
from daemon.sender_auth.resolver import DnsPermError, DnsSession, DnsTempError

_SESSION: contextvars.ContextVar[DnsSession | None] = contextvars.ContextVar(
    "sender_auth_spf_session", default=None)
_PYSPF_LOOKUP = spf.DNSLookup


def _dns_lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[Any]:
    """pyspf's DNSLookup contract: `[((name, qtype), value), …]`, TempError/PermError."""
    session = _SESSION.get()
    if session is None:
        return _PYSPF_LOOKUP(name, qtype, strict, timeout)  # type: ignore[no-any-return]
    try:
        rdatas = session.query(name, qtype)
    except DnsTempError as e:
        raise spf.TempError(f"DNS {e}") from None
    except DnsPermError as e:
        raise spf.PermError(f"DNS {e}") from None
    answers: list[Any] = []
    for rd in rdatas:
        if qtype in ("A", "AAAA"):
            answers.append(((name, qtype), rd.address))
        elif qtype == "MX":
            answers.append(((name, qtype), (rd.preference, rd.exchange.to_text(True))))
        elif qtype == "PTR":
            answers.append(((name, qtype), rd.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            answers.append(((name, qtype), rd.strings))
    return answers


spf.DNSLookup = _dns_lookup


def client_address(text: str | None) -> str | None:
    """The SMTP client's address as pyspf wants it (an IPv4-mapped IPv6 one as IPv4)."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def check_spf(session: DnsSession, ip: str | None, sender: str, helo: str | None,
              defects: list[str], *, label: str) -> SpfResult:
    """The SPF result for `sender` (`local@domain`) connecting from `ip`; `none` when there is
    no address or no usable domain to check (RFC 7208 §4.3)."""
    domain = plausible_domain(sender.rpartition("@")[2])
    if domain is None or "." not in domain:
        return SpfResult("none", domain)
    if ip is None:
        defects.append(f"spf {label} none: no client address")
        return SpfResult("none", domain)
    token = _SESSION.set(session)
    try:
        query = spf.query(i=ip, s=sender, h=helo or domain, timeout=session.resolver.timeout,
                          querytime=max(0.001, session.remaining()))
        result, _code, explanation = query.check()
    except Exception as e:  # pyspf raises outside check() on some inputs; never lose the message
        result, explanation = "permerror", type(e).__name__
    finally:
        _SESSION.reset(token)
    result = str(result).lower()
    if result not in ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"):
        result = "permerror"
    if result in ("temperror", "permerror"):
        defects.append(f"spf {label} {result}: {explanation}")
    return SpfResult(result, domain)
