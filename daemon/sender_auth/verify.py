"""`verify`: one inbound message's SPF, DKIM, DMARC and ARC results and its verdict (SPEC §13).

Synchronous and self-contained: the caller runs it in a thread or a worker process, after the
250. It knows nothing of SMTP sessions or storage; it takes the envelope facts and the raw bytes
and returns an `Authentication`, never raising. Its work is bounded by `Limits` (signatures,
body canonicalisation, ARC sets, key sizes) and its DNS by the session's deadline and lookup cap.

The verdict, precisely:
- a trusted relay's topmost Authentication-Results, when there is one, supplies the spf, dkim,
  arc (and dmarc, if it has it) results; otherwise we check;
- DMARC record found: DMARC's result — `pass`, `fail`, or `temperror` (the record, or an aligned
  SPF/DKIM check, could not be fetched); its `permerror` (not exactly one From address, an
  unusable answer) counts as `fail`;
- no DMARC record: `pass` when an SPF or DKIM pass aligns (relaxed) with the From domain, else
  `temperror` when an aligned check hit a DNS failure, else `none`.
`temperror` is thus "DNS failed where the verdict depended on it": checking again later may
give another verdict. An escape from every guard (a bug) gives `temperror` throughout.
"""

from __future__ import annotations

from collections.abc import Collection

from daemon.sender_auth.arc_check import check_arc
from daemon.sender_auth.dkim_check import WorkBudget, check_dkim
from daemon.sender_auth.dmarc_check import aligned, check_dmarc, evaluate
from daemon.sender_auth.incoming import trusted_results
from daemon.sender_auth.message import author_domain, parse_message, plausible_domain
from daemon.sender_auth.records import (
    ArcResult,
    Authentication,
    DkimResult,
    DmarcResult,
    Limits,
    SpfResult,
    Verdict,
    build_header,
)
from daemon.sender_auth.resolver import Resolver
from daemon.sender_auth.spf_check import check_spf, client_address

DEFAULT_LIMITS = Limits()


def decide_verdict(author: str | None, spf: SpfResult, dkim: tuple[DkimResult, ...],
                   dmarc: DmarcResult) -> Verdict:
    """The message's verdict from its results (see the module docstring)."""
    if dmarc.result == "pass":
        return "pass"
    if dmarc.result == "temperror":
        return "temperror"
    if dmarc.result in ("fail", "permerror"):
        return "fail"
    if author is None:
        return "none"
    outcome = evaluate(author, spf, dkim)
    return "pass" if outcome == "pass" else "temperror" if outcome == "temperror" else "none"


def verify(raw: bytes, *, client_ip: str | None, helo: str | None, mail_from: str,
           authserv_id: str, resolver: Resolver, trusted_authserv_ids: Collection[str] = (),
           limits: Limits = DEFAULT_LIMITS, body_read: bool = True) -> Authentication:
    """Authenticate `raw` as received from `client_ip` after `HELO helo` / `MAIL FROM:<mail_from>`
    (`""` for the null sender). Never raises; bad input gives permerror/none and `defects`.
    `body_read=False`: `raw` is only the header of a message too large to read (DKIM `policy`,
    ARC not checked; SPF and DMARC as usual)."""
    defects: list[str] = []
    try:
        return _verify(raw, client_ip, helo, mail_from, authserv_id, resolver,
                       trusted_authserv_ids, limits, defects, body_read)
    except Exception as e:  # every check guards itself; this is the last line
        defects.append(f"verification failed: {type(e).__name__}")
        spf = SpfResult("temperror", None)
        dmarc, arc = DmarcResult("temperror", None, None), ArcResult("temperror")
        header = build_header(authserv_id, spf=spf, helo=spf, mail_from="", helo_name=None,
                              dkim=(), dmarc=dmarc, arc=arc)
        return Authentication(spf, spf, (), dmarc, arc, "temperror", header, authserv_id,
                              tuple(defects))


def _verify(raw: bytes, client_ip: str | None, helo: str | None, mail_from: str,
            authserv_id: str, resolver: Resolver, trusted_authserv_ids: Collection[str],
            limits: Limits, defects: list[str], body_read: bool = True) -> Authentication:
    message = parse_message(raw)
    author = author_domain(message)
    session = resolver.session(budget=limits.dns_budget, max_lookups=limits.max_dns_lookups)
    taken = trusted_results(message, authserv_id, trusted_authserv_ids, defects)
    if taken is not None:
        dmarc = taken.dmarc or check_dmarc(session, author, taken.spf, taken.dkim, defects)
        return _authentication(authserv_id, author, taken.spf, taken.helo, taken.mail_from,
                               taken.helo_name, taken.dkim, dmarc, taken.arc, defects,
                               taken_from=taken.authserv_id)

    ip = client_address(client_ip)
    if client_ip and ip is None:
        defects.append("client address is not an IP address")
    helo_name = helo.strip() if helo and helo.strip() else None
    helo_domain = plausible_domain(helo_name) if helo_name and "." in helo_name else None
    if helo_domain is not None:
        helo_spf = check_spf(session, ip, f"postmaster@{helo_domain}", helo_domain, defects,
                             label="helo")
    else:  # absent, an address literal, or a bare name: nothing SPF could check
        helo_spf = SpfResult("none", helo_name)
    sender = mail_from.strip().strip("<>").strip()
    if sender:
        spf = check_spf(session, ip, sender, helo_domain, defects, label="mailfrom")
    else:  # RFC 7208 §2.4: the null sender is checked as postmaster@<HELO>, as above
        spf = helo_spf

    budget = WorkBudget(limits.max_body_work, body_read)
    dkim = check_dkim(message, session, limits, budget,
                      lambda domain: author is not None and aligned(domain, author, "r"), defects)
    dmarc = check_dmarc(session, author, spf, dkim, defects)
    arc = check_arc(message, session, limits, budget, defects)
    return _authentication(authserv_id, author, spf, helo_spf, sender, helo_name, dkim, dmarc,
                           arc, defects)


def _authentication(authserv_id: str, author: str | None, spf: SpfResult, helo: SpfResult,
                    mail_from: str, helo_name: str | None, dkim: tuple[DkimResult, ...],
                    dmarc: DmarcResult, arc: ArcResult, defects: list[str], *,
                    taken_from: str | None = None) -> Authentication:
    header = build_header(authserv_id, spf=spf, helo=helo, mail_from=mail_from,
                          helo_name=helo_name, dkim=dkim, dmarc=dmarc, arc=arc,
                          taken_from=taken_from)
    return Authentication(spf, helo, dkim, dmarc, arc, decide_verdict(author, spf, dkim, dmarc),
                          header, taken_from or authserv_id, tuple(defects))
