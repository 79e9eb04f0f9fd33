"""DMARC (RFC 7489): the policy record, identifier alignment and the organisational domain.

The organisational domain comes from the public suffix list embedded in `publicsuffixlist`
(parsed once per process, never fetched; the list is refreshed by upgrading the package). The
policy is looked up at `_dmarc.<From domain>`, then at `_dmarc.<organisational domain>`, where
`sp=` applies. Result: `pass` when an SPF or DKIM pass aligns (relaxed: same organisational
domain; strict: same domain), else `temperror` when an aligned check failed for DNS reasons,
else `fail`; `none` without a record; `permerror` when the From domain cannot be determined or
the record's DNS answer is unusable. Never raises.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

from daemon.sender_auth.records import DkimResult, DmarcResult, SpfResult
from daemon.sender_auth.resolver import DnsPermError, DnsSession, DnsTempError

_PSL: Any = None
_PSL_LOCK = threading.Lock()
_DMARC1 = re.compile(rb"\s*v\s*=\s*DMARC1\s*(;|$)", re.IGNORECASE)
POLICIES = ("none", "quarantine", "reject")


def _suffix_list() -> Any:
    global _PSL
    with _PSL_LOCK:  # ~100 ms to parse: once per process, and not twice by racing threads
        if _PSL is None:
            from publicsuffixlist import PublicSuffixList

            _PSL = PublicSuffixList()  # the list in the wheel; no network
        return _PSL


def org_domain(domain: str) -> str:
    """The organisational domain: one label below the longest public suffix (`a.b.example.co.uk`
    → `example.co.uk`); an unknown TLD counts as a suffix (`a.example.test` → `example.test`)."""
    domain = domain.lower().rstrip(".")
    try:
        return str(_suffix_list().privatesuffix(domain) or domain)
    except Exception:  # a name the list's parser cannot take
        return domain


def aligned(domain: str | None, author: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict = the same domain; relaxed = the same organisational domain."""
    if not domain:
        return False
    domain = domain.lower().rstrip(".")
    if mode == "s":
        return domain == author
    return domain == author or org_domain(domain) == org_domain(author)


def policy_record(session: DnsSession, domain: str) -> dict[str, str] | None:
    """The tags of the one DMARC record at `_dmarc.<domain>`, or None (none, or several:
    RFC 7489 §6.6.3 says to apply no policy then)."""
    records = [t for t in session.txt(f"_dmarc.{domain}") if _DMARC1.match(t)]
    if len(records) != 1:
        return None
    tags: dict[str, str] = {}
    for part in records[0].decode("ascii", "replace").split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def evaluate(author: str, spf: SpfResult, dkim: Iterable[DkimResult], *, adkim: str = "r",
             aspf: str = "r") -> str:
    """pass / temperror / fail from the checks, under the given alignment modes."""
    dkim = list(dkim)
    spf_aligned = aligned(spf.domain, author, aspf)
    dkim_aligned = [d for d in dkim if aligned(d.domain, author, adkim)]
    if (spf_aligned and spf.result == "pass") or any(d.result == "pass" for d in dkim_aligned):
        return "pass"
    if (spf_aligned and spf.result == "temperror") or \
            any(d.result == "temperror" for d in dkim_aligned):
        return "temperror"
    return "fail"


def check_dmarc(session: DnsSession, author: str | None, spf: SpfResult,
                dkim: Iterable[DkimResult], defects: list[str]) -> DmarcResult:
    """DMARC for a message whose From domain is `author` (None: not exactly one)."""
    if author is None:
        defects.append("dmarc permerror: not exactly one From address")
        return DmarcResult("permerror", None, None)
    org = org_domain(author)
    try:
        record, at_org = policy_record(session, author), False
        if record is None and org != author:
            record, at_org = policy_record(session, org), True
    except DnsTempError as e:
        defects.append(f"dmarc temperror: {e}")
        return DmarcResult("temperror", None, author)
    except DnsPermError as e:
        defects.append(f"dmarc permerror: {e}")
        return DmarcResult("permerror", None, author)
    if record is None:
        return DmarcResult("none", None, author)
    policy = record.get("p", "").lower()
    if policy not in POLICIES:
        policy = "none"  # §6.6.3: an unknown p= is taken as none
    if at_org and record.get("sp", "").lower() in POLICIES:
        policy = record["sp"].lower()
    result = evaluate(author, spf, dkim, adkim=_mode(record.get("adkim")),
                      aspf=_mode(record.get("aspf")))
    return DmarcResult(result, policy, author)


def _mode(value: str | None) -> str:
    return "s" if (value or "").strip().lower() == "s" else "r"
