"""Sender authentication of inbound mail (SPEC §13): SPF, DKIM, DMARC and ARC verdicts.

`verify(raw, client_ip=…, helo=…, mail_from=…, authserv_id=…, resolver=…)` returns a frozen
`Authentication` (`.to_json()` is the message's `authentication` object). It is synchronous and
never raises; run it off the event loop, after the 250 (`SenderAuth.check` runs it in the
verifier process, `python -m daemon.sender_auth.worker`, in a bounded pool of threads). One
`Resolver` per process holds the DNS cache. This package knows nothing of
SMTP sessions, the pipeline or the API.
"""

from daemon.sender_auth.dmarc_check import org_domain
from daemon.sender_auth.records import (
    ArcResult,
    Authentication,
    DkimResult,
    DmarcResult,
    Limits,
    Settings,
    SpfResult,
    Verdict,
)
from daemon.sender_auth.resolver import (
    DnsPermError,
    DnsSession,
    DnsTempError,
    Resolver,
    parse_nameserver,
)
from daemon.sender_auth.service import SenderAuth, Verifier, local_submission
from daemon.sender_auth.verify import decide_verdict, verify

__all__ = [
    "ArcResult",
    "Authentication",
    "DkimResult",
    "DmarcResult",
    "DnsPermError",
    "DnsSession",
    "DnsTempError",
    "Limits",
    "Resolver",
    "SenderAuth",
    "Settings",
    "SpfResult",
    "Verdict",
    "Verifier",
    "decide_verdict",
    "local_submission",
    "org_domain",
    "parse_nameserver",
    "verify",
]
