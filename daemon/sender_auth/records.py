"""The records verification returns (SPEC §13's `authentication` object) and its limits.

Frozen dataclasses only, plus the RFC 8601 header text built from them with authres. No DNS and
no parsing of the message here. Every value that reaches the header is one we checked is safe
to put there: a MAIL FROM or a `d=` chosen by the sender must not add a clause of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import authres
import authres.arc
import authres.dmarc

Verdict = Literal["pass", "fail", "none", "temperror"]

SPF_RESULTS = frozenset({"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"})
DKIM_RESULTS = frozenset({"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"})
DMARC_RESULTS = frozenset({"none", "pass", "fail", "temperror", "permerror"})
# RFC 8617 registers none/pass/fail for arc=; the JSON also says temperror/permerror (a key we
# could not fetch, a chain we would not check), which the header writes as fail.
ARC_RESULTS = frozenset({"none", "pass", "fail", "temperror", "permerror"})


@dataclass(frozen=True)
class Limits:
    """Bounds on one message's verification work; each is a config value with this default."""

    max_signatures: int = 10  # DKIM signatures verified; later ones are permerror (RFC 6376 §6.1)
    max_key_record_bytes: int = 4096  # a DKIM key TXT record; an 8192-bit key is ~1.5 kB
    max_rsa_bits: int = 8192  # RSA modulus of a DKIM/ARC key
    min_rsa_bits: int = 1024  # smaller keys give `policy` (RFC 8301)
    max_rsa_exponent_bits: int = 64  # dkimpy's RSA is pure Python: a huge e is unbounded CPU
    max_arc_sets: int = 50  # RFC 8617 §4.2.1: i= is at most 50
    # Bytes of body canonicalisation (relaxed; simple counts 1/16) across all DKIM signatures
    # and ARC sets of one message. The best-placed signature is always verified, whatever its
    # cost (so at most smtp.max_message_size once); past the budget the rest are permerror.
    max_body_work: int = 16 * 1024**2
    max_dns_lookups: int = 100  # per message, over SPF ×2, DKIM, DMARC and ARC
    dns_budget: float | None = None  # seconds for all of one message's lookups; 5 × dns_timeout


@dataclass(frozen=True)
class Settings:
    """What a verifier needs, from `[auth]` (`SenderAuth.of`); it crosses into the verifier
    process."""

    authserv_id: str
    dns_servers: tuple[str, ...] = ()
    dns_timeout: float = 2.0
    trusted_authserv_ids: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    concurrency: int = 8
    max_message_size: int = 4 * 1024**2
    nice: int = 10  # the verifier process's: on a busy machine, mail comes first


@dataclass(frozen=True)
class SpfResult:
    """RFC 7208 result for one identity (MAIL FROM, or HELO); `domain` is the one checked."""

    result: str
    domain: str | None

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result, "domain": self.domain}


@dataclass(frozen=True)
class DkimResult:
    """One DKIM-Signature's result, in the order the headers appear (top first)."""

    result: str
    domain: str | None
    selector: str | None
    algorithm: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result, "domain": self.domain, "selector": self.selector}


@dataclass(frozen=True)
class DmarcResult:
    """RFC 7489: `domain` is the From domain, `policy` the p= (or sp=) that applies, if any."""

    result: str
    policy: str | None
    domain: str | None

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result, "policy": self.policy, "domain": self.domain}


@dataclass(frozen=True)
class ArcResult:
    """RFC 8617 chain validation (`cv`) of the message as it reached us."""

    result: str

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result}


@dataclass(frozen=True)
class Authentication:
    """What `verify` found. `authserv_id` is whose results these are: ours, or the trusted
    relay's whose Authentication-Results were taken; `defects` say what was malformed or
    refused (for logs, not for the API)."""

    spf: SpfResult
    helo: SpfResult
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult
    arc: ArcResult
    verdict: Verdict
    header: str
    authserv_id: str
    defects: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """SPEC §13's `authentication` object; the HELO check rides inside `spf` as `helo`."""
        return {
            "spf": {**self.spf.to_json(), "helo": self.helo.to_json()},
            "dkim": [d.to_json() for d in self.dkim],
            "dmarc": self.dmarc.to_json(),
            "arc": self.arc.to_json(),
            "verdict": self.verdict,
            "header": self.header,
        }


# An RFC 8601 value we write unquoted: what an address or a domain may hold, minus anything
# that ends a clause (";"), opens a comment ("(") or a quoted string, or folds the header.
_UNQUOTED = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,255}")
_PRINTABLE = re.compile(r"[\x21-\x7e]{1,255}")


def header_value(value: str | None) -> str | None:
    """`value` when it can go into an Authentication-Results property as is, else None.

    authres quotes a value without "@" that is not a token, but writes one with "@" unquoted,
    so those must already be safe."""
    if not value:
        return None
    if _UNQUOTED.fullmatch(value):
        return value
    if "@" not in value and _PRINTABLE.fullmatch(value):
        return value  # authres quotes it, escaping " and \
    return None


def _mailfrom_value(mail_from: str) -> str | None:
    return header_value(mail_from) or header_value(mail_from.rpartition("@")[2])


def build_header(authserv_id: str, *, spf: SpfResult, helo: SpfResult, mail_from: str,
                 helo_name: str | None, dkim: tuple[DkimResult, ...], dmarc: DmarcResult,
                 arc: ArcResult, taken_from: str | None = None) -> str:
    """The Authentication-Results value (without the field name) for these results."""
    results: list[authres.AuthenticationResult] = []
    if mail_from or helo_name:
        identity = mail_from or f"postmaster@{helo_name}"
        results.append(authres.SPFAuthenticationResult(
            result=spf.result, smtp_mailfrom=_mailfrom_value(identity)))
    if helo_name:
        results.append(authres.SPFAuthenticationResult(
            result=helo.result, smtp_helo=header_value(helo_name)))
    for sig in dkim:
        results.append(authres.DKIMAuthenticationResult(
            result=sig.result, header_d=header_value(sig.domain),
            header_s=header_value(sig.selector), header_a=header_value(sig.algorithm)))
    if dmarc.domain or dmarc.result != "none":
        results.append(authres.dmarc.DMARCAuthenticationResult(
            result=dmarc.result, header_from=header_value(dmarc.domain),
            policy=header_value(dmarc.policy)))
    arc_result = arc.result if arc.result in ("none", "pass") else "fail"
    results.append(authres.arc.ARCAuthenticationResult(result=arc_result))
    comment = (f"results of {taken_from}" if taken_from and _UNQUOTED.fullmatch(taken_from)
               else None)
    return str(authres.AuthenticationResultsHeader(
        authserv_id=authserv_id, authserv_id_comment=comment, results=results).header_value())
