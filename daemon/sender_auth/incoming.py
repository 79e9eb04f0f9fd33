"""Authentication-Results fields already on the message (RFC 8601 §5): which one to believe.

Only the topmost field, the one the last hop (our relay) added, and only when its authserv-id is
in `trusted_authserv_ids` and is not our own: then its spf, dkim, dmarc and arc results stand
instead of checking again. Every other field, above all one carrying our own authserv-id (a
sender's forgery, or a loop), is never read for results; the raw message is left as it is.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import authres

from daemon.sender_auth.message import ParsedMessage, plausible_domain
from daemon.sender_auth.records import (
    ARC_RESULTS,
    DKIM_RESULTS,
    DMARC_RESULTS,
    SPF_RESULTS,
    ArcResult,
    DkimResult,
    DmarcResult,
    SpfResult,
)


@dataclass(frozen=True)
class TakenResults:
    """A trusted relay's results, as ours would be."""

    authserv_id: str
    spf: SpfResult
    helo: SpfResult
    helo_name: str | None
    mail_from: str
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult | None  # None: the relay gave no dmarc= clause
    arc: ArcResult


def authserv_id_of(value: str) -> str:
    """The authserv-id of an Authentication-Results value (lower case), even of a malformed one."""
    try:
        return str(authres.all_features().parse_value(value).authserv_id or "")
    except Exception:  # authres.AuthResError on junk
        first = value.split(";", 1)[0].split()
        return first[0].lower() if first else ""


def trusted_results(message: ParsedMessage, own_id: str, trusted: Collection[str],
                    defects: list[str]) -> TakenResults | None:
    """The topmost field's results when its authserv-id is trusted (and not ours), else None."""
    fields = message.values("authentication-results")
    if not fields:
        return None
    top = fields[0]
    sid = authserv_id_of(top)
    trusted_ids = {t.lower() for t in trusted} - {own_id.lower()}
    if sid not in trusted_ids:
        return None
    try:
        header = authres.all_features().parse_value(top)
    except Exception as e:
        defects.append(f"trusted Authentication-Results of {sid} unparsable: {type(e).__name__}")
        return None
    return _taken(sid, list(header.results), defects)


def _known(result: str, allowed: frozenset[str], method: str, defects: list[str]) -> str:
    if result == "hardfail" and method == "spf":
        return "fail"  # RFC 4408's name, still written by some relays
    if result in allowed:
        return result
    defects.append(f"trusted {method}={result} is not a known result")
    return "permerror"


def _prop(result: Any, ptype: str, name: str) -> str | None:
    """The value of the result's first `ptype.name=` property."""
    for prop in getattr(result, "properties", None) or []:
        if prop.type == ptype and prop.name == name and prop.value:
            return str(prop.value)
    return None


def _taken(sid: str, results: list[Any], defects: list[str]) -> TakenResults:
    spf = helo = SpfResult("none", None)
    mail_from, helo_name = "", None
    dkim: list[DkimResult] = []
    dmarc: DmarcResult | None = None
    arc = ArcResult("none")
    for r in results:
        method = getattr(r, "method", "")
        value = str(getattr(r, "result", "")).lower()
        if method == "spf":
            res = _known(value, SPF_RESULTS, "spf", defects)
            if (address := _prop(r, "smtp", "mailfrom")) is not None:
                mail_from = address
                spf = SpfResult(res, plausible_domain(address.rpartition("@")[2]))
            elif (name := _prop(r, "smtp", "helo")) is not None:
                helo_name = name
                helo = SpfResult(res, plausible_domain(name))
        elif method == "dkim":
            dkim.append(DkimResult(_known(value, DKIM_RESULTS, "dkim", defects),
                                   plausible_domain(_prop(r, "header", "d")),
                                   _prop(r, "header", "s"), _prop(r, "header", "a")))
        elif method == "dmarc" and dmarc is None:
            policy = _prop(r, "policy", "dmarc")
            dmarc = DmarcResult(_known(value, DMARC_RESULTS, "dmarc", defects),
                                policy.lower() if policy else None,
                                plausible_domain(_prop(r, "header", "from")))
        elif method == "arc":
            arc = ArcResult(_known(value, ARC_RESULTS, "arc", defects))
    return TakenResults(sid, spf, helo, helo_name, mail_from, tuple(dkim), dmarc, arc)
