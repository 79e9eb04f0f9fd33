"""DKIM (RFC 6376): every signature verified on its own with dkimpy, under our limits.

dkimpy does the canonicalisation and the crypto; this module picks which signatures to verify,
fetches and guards their keys (`key_lookup`: size, modulus, exponent), adds the checks dkimpy
leaves out (rsa-sha1, From unsigned, `l=` short of the body) and maps each outcome to one
RFC 8601 result. It never raises, and its CPU is bounded by `Limits.max_signatures` and the
shared `WorkBudget` of body canonicalisation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dkim
import dkim.util
from dkim.canonicalization import CanonicalizationPolicy

from daemon.sender_auth.message import ParsedMessage, plausible_domain
from daemon.sender_auth.records import DkimResult, Limits
from daemon.sender_auth.resolver import DnsPermError, DnsSession, DnsTempError

KeyLookup = Callable[..., bytes]

# dkimpy logs every failed signature at ERROR; a forged message is not our error. An unattached
# logger above CRITICAL drops it all without touching the logging configuration.
QUIET = logging.Logger("daemon.sender_auth.dkimpy", logging.CRITICAL + 1)

SIMPLE_BODY_WEIGHT = 16  # simple body canonicalisation is ~80× cheaper than relaxed


class KeyPolicyError(Exception):
    """A key record that is valid but not acceptable (RSA below `min_rsa_bits`): `policy`."""


class WorkBudget:
    """Bytes of body canonicalisation left for one message, shared by DKIM and ARC."""

    def __init__(self, limit: int, body_read: bool = True) -> None:
        self.limit = limit
        self.body_read = body_read  # False: only the header was read (a message too large)
        self.spent = 0
        self.verifications = 0  # body canonicalisations started: what the tests count

    def take(self, cost: int, *, always: bool = False) -> bool:
        """Spend `cost` if it fits (or `always`); False leaves the budget as it was."""
        if not self.body_read or (not always and self.spent + cost > self.limit):
            return False
        self.spent += cost
        self.verifications += 1
        return True


def body_cost(body: bytes, c_value: bytes | None, default: bytes) -> int:
    """What canonicalising `body` for a signature with this `c=` costs, in relaxed bytes."""
    body_part = (c_value or default).partition(b"/")[2] or b"simple"
    relaxed = body_part.strip().lower() == b"relaxed"
    return len(body) if relaxed else len(body) // SIMPLE_BODY_WEIGHT + 1


def key_lookup(session: DnsSession, limits: Limits) -> KeyLookup:
    """dkimpy's `dnsfunc(name: bytes, timeout=…) -> bytes` over our DNS, refusing key records
    that would cost unbounded CPU (the TXT size, RSA modulus and exponent are checked with
    dkimpy's own parser before dkimpy's pure-Python RSA ever sees them)."""

    def dnsfunc(name: bytes, timeout: float = 5.0) -> bytes:
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            raise DnsPermError("key name is not ASCII") from None
        records = session.txt(text)
        if not records:
            raise DnsPermError(f"no key record at {text}")
        record = records[0]
        if len(record) > limits.max_key_record_bytes:
            raise DnsPermError(f"key record of {len(record)} bytes")
        try:
            pk, keysize, ktag, _ = dkim.evaluate_pk(name, record)
        except Exception:  # KeyFormatError, bad base64 …: a key no signature can verify with
            raise DnsPermError(f"unusable key record at {text}") from None
        if ktag == b"rsa":
            if keysize > limits.max_rsa_bits or \
                    pk["publicExponent"].bit_length() > limits.max_rsa_exponent_bits:
                raise DnsPermError(f"RSA key of {keysize} bits at {text}")
            if keysize < limits.min_rsa_bits:
                raise KeyPolicyError(f"RSA key of {keysize} bits at {text}")
        return record

    return dnsfunc


def _tags(raw: bytes) -> dict[bytes, bytes] | None:
    try:
        tags: dict[bytes, bytes] = dkim.util.parse_tag_value(raw)
    except Exception:  # InvalidTagValueList and friends
        return None
    return tags


def _text(tags: dict[bytes, bytes], tag: bytes) -> str | None:
    text = tags.get(tag, b"").decode("ascii", "replace").strip()
    return text or None


def _precheck(tags: dict[bytes, bytes]) -> str | None:
    """What makes this signature a `permerror` before any DNS or crypto, if anything."""
    if tags.get(b"a", b"").strip().lower() == b"rsa-sha1":
        return "rsa-sha1 is not acceptable (RFC 8301)"
    try:
        dkim.validate_signature_fields(tags)
    except dkim.DKIMException:  # a missing tag, bad base64, t= ahead, x= past, i= not under d=
        return "malformed signature fields"
    signed = [h.strip().lower() for h in tags.get(b"h", b"").split(b":")]
    if b"from" not in signed:
        return "From is not signed (RFC 6376 §5.4)"
    return None


def _length_short_of_body(tags: dict[bytes, bytes], body: bytes) -> bool:
    """True when `l=` leaves part of the body unsigned (content could have been appended)."""
    if b"l" not in tags:
        return False
    policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
    return int(tags[b"l"]) < len(policy.canonicalize_body(body))


def verification_order(domains: list[str | None], preferred: Callable[[str], bool]) -> list[int]:
    """Indexes in the order to verify: signatures whose domain `preferred` says aligns with the
    From domain first (the budget should go to the one DMARC needs), then header order."""
    def rank(i: int) -> tuple[bool, int]:
        domain = domains[i]
        return (not (domain is not None and preferred(domain)), i)

    return sorted(range(len(domains)), key=rank)


def check_dkim(message: ParsedMessage, session: DnsSession, limits: Limits, budget: WorkBudget,
               preferred: Callable[[str], bool], defects: list[str]) -> tuple[DkimResult, ...]:
    """One result per DKIM-Signature field, top first."""
    raws = [v for k, v in message.headers if k.lower() == b"dkim-signature"]
    if not raws:
        return ()
    tags = [_tags(raw) for raw in raws]
    info = [(plausible_domain(_text(t, b"d")) if t else None,
             _text(t, b"s") if t else None,
             _text(t, b"a") if t else None) for t in tags]
    results: dict[int, DkimResult] = {}

    def record(idx: int, result: str, why: str | None = None) -> None:
        results[idx] = DkimResult(result, *info[idx])
        if why:
            defects.append(f"dkim[{idx}] {result}: {why}")

    verifier: Any = None
    if message.dkim_ready:
        # One parse for every signature (and for ARC): dkimpy would split a 25 MB message again
        # for each object. The two attributes are what `set_message` fills.
        verifier = dkim.DKIM(None, logger=QUIET, minkey=limits.min_rsa_bits,
                             timeout=session.resolver.timeout)
        verifier.headers, verifier.body = [list(h) for h in message.headers], message.body
    dnsfunc = key_lookup(session, limits)
    candidates = list(range(min(len(raws), limits.max_signatures)))
    for idx in range(len(candidates), len(raws)):
        record(idx, "permerror", f"more than {limits.max_signatures} signatures")
    first = True
    for idx in verification_order([info[i][0] for i in candidates], preferred):
        fields = tags[idx]
        if fields is None:
            record(idx, "neutral", "unparsable tag list")
            continue
        if verifier is None:
            record(idx, "permerror", "header not parsable for DKIM")
            continue
        if (why := _precheck(fields)) is not None:
            record(idx, "permerror", why)
            continue
        cost = (body_cost(message.body, fields.get(b"c"), b"simple/simple")
                * (2 if b"l" in fields else 1))
        if not budget.body_read:  # RFC 8601 `policy`: signed, not verified by local policy
            record(idx, "policy", "message over auth.max_message_size: body not verified")
            continue
        if not budget.take(cost, always=first):
            record(idx, "permerror", "message verification budget spent")
            continue
        first = False
        record(idx, *_verify_one(verifier, idx, dnsfunc, fields, message.body))
    return tuple(results[i] for i in range(len(raws)))


def _verify_one(verifier: Any, idx: int, dnsfunc: KeyLookup, fields: dict[bytes, bytes],
                body: bytes) -> tuple[str, str | None]:
    """(result, why) for signature `idx`, from dkimpy's outcome."""
    try:
        ok = verifier.verify(idx=idx, dnsfunc=dnsfunc)
    except DnsTempError as e:
        return "temperror", str(e)
    except DnsPermError as e:
        return "permerror", str(e)
    except KeyPolicyError as e:
        return "policy", str(e)
    except dkim.ValidationError:  # the fields passed _precheck, so: the body hash differs
        return "fail", "body hash mismatch"
    except dkim.DKIMException as e:  # MessageFormatError (bad c=), UnknownKeyTypeError
        return "neutral", type(e).__name__
    except Exception as e:  # a library bug on hostile input must not lose the message
        return "permerror", f"dkimpy: {type(e).__name__}"
    if not ok:
        return "fail", "signature did not verify"
    try:
        if _length_short_of_body(fields, body):
            return "policy", "l= leaves part of the body unsigned"
    except Exception:
        return "permerror", "l= unusable"
    return "pass", None
