"""ARC (RFC 8617): the chain's validation status (`cv`) as the message reached us, with dkimpy.

Bounded before dkimpy runs: at most `Limits.max_arc_sets` sets (more is `fail`, as §5.1.1 says),
and every set's AMS hashes the whole body again, so the chain must fit what is left of the
message's `WorkBudget` (else `permerror`: not checked). Keys go through the same guarded
`key_lookup` as DKIM. Never raises.
"""

from __future__ import annotations

import dkim

from daemon.sender_auth.dkim_check import QUIET, KeyPolicyError, WorkBudget, body_cost, key_lookup
from daemon.sender_auth.message import ParsedMessage
from daemon.sender_auth.records import ArcResult, Limits
from daemon.sender_auth.resolver import DnsPermError, DnsSession, DnsTempError


def check_arc(message: ParsedMessage, session: DnsSession, limits: Limits, budget: WorkBudget,
              defects: list[str]) -> ArcResult:
    """`none` (not ARC-sealed), `pass`, `fail`, `temperror` (a key lookup failed for now) or
    `permerror` (the chain was too costly to check)."""
    seals = sum(1 for k, _ in message.headers if k.lower() == b"arc-seal")
    if seals == 0:
        return ArcResult("none")
    if seals > limits.max_arc_sets:
        defects.append(f"arc fail: {seals} ARC sets, more than {limits.max_arc_sets}")
        return ArcResult("fail")
    if not message.dkim_ready:
        defects.append("arc fail: header not parsable")
        return ArcResult("fail")
    if not budget.take(seals * body_cost(message.body, None, b"relaxed/relaxed")):
        defects.append("arc permerror: message verification budget spent")
        return ArcResult("permerror")
    arc = dkim.ARC(None, logger=QUIET, minkey=limits.min_rsa_bits,
                   timeout=session.resolver.timeout)  # not dkim.arc_verify: it ignores timeout
    arc.headers, arc.body = [list(h) for h in message.headers], message.body
    try:
        cv, _sets, reason = arc.verify(dnsfunc=key_lookup(session, limits))
    except DnsTempError as e:
        defects.append(f"arc temperror: {e}")
        return ArcResult("temperror")
    except (DnsPermError, KeyPolicyError) as e:  # a seal whose key cannot verify it
        defects.append(f"arc fail: {e}")
        return ArcResult("fail")
    except Exception as e:  # malformed sets; a library bug must not lose the message
        defects.append(f"arc fail: {type(e).__name__}")
        return ArcResult("fail")
    if cv == dkim.CV_Pass:
        return ArcResult("pass")
    if cv == dkim.CV_None:
        return ArcResult("none")
    defects.append(f"arc fail: {reason}")  # CV_Fail, or None: an earlier seal said cv=fail
    return ArcResult("fail")
