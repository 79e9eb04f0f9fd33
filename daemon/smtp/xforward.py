"""XFORWARD (Postfix's XFORWARD_README): a relay in `smtp.trusted_networks` names the client it
received the message from, so sender authentication asks about that client, not the relay.

Pure: the situation and one command's argument in, the reply or the forwarded attributes out;
session.py holds them on the envelope. Nothing here may be believed from an untrusted peer.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass

# What the EHLO reply offers: the attributes we use. Postfix's client sends only those the
# server names; PORT, IDENT and SOURCE are still taken from a client that sends them anyway.
EHLO_KEYWORD = "XFORWARD NAME ADDR PROTO HELO"
ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")

# Postfix smtpd's replies (its texts, so a relay's log reads the same behind either).
XFORWARD_OK = "250 2.0.0 Ok"
IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"
SYNTAX = "501 5.5.4 Syntax: XFORWARD attribute=value..."
NOT_AUTHORIZED = "550 5.7.0 Error: insufficient authorization"
PAIR_EXPECTED = "501 5.5.4 Error: attribute=value expected"
VALUE_TOO_LONG = "501 5.5.4 Error: attribute value too long"

# XFORWARD_README note 1: no attribute-value element is longer; PROTO is at most 64 characters.
MAX_VALUE = 255
MAX_PROTO = 64
# Note 3: in any case. [TEMPUNAVAIL] is XCLIENT's "temporarily unknown": unknown here too.
UNKNOWN = frozenset({"[UNAVAILABLE]", "[TEMPUNAVAIL]"})
# Note 1: after decoding, no control, non-ASCII, space or header-special characters. Postfix's
# smtpd masks them with "?" (its NEUTER_CHARACTERS), and so do we: refusing the command would
# drop the address that came with it, and the relay would then go on as itself.
_SPECIALS = frozenset(' <>()\\";@')
_XTEXT = re.compile(r"(?:[^+]|\+[0-9A-Fa-f]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-Fa-f]{2})")


class XforwardError(ValueError):
    """An XFORWARD command refused for its syntax; `reply` is the 501 to give."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True)
class Forwarded:
    """What a trusted relay forwarded for the next transaction; None where it said unknown.

    All of it is None after the first XFORWARD command until set (XFORWARD_README: "Upon
    receipt of an initial XFORWARD command, the SMTP server initializes all XFORWARD
    attributes to [UNAVAILABLE]"), so nothing of the relay's own session fills a gap.
    """

    name: str | None = None
    addr: str | None = None  # plain IP text: IPv4 dotted, IPv6 compressed
    port: str | None = None  # decimal digits
    proto: str | None = None
    helo: str | None = None
    ident: str | None = None
    source: str | None = None  # "LOCAL" or "REMOTE"


def command_refusal(*, in_transaction: bool, has_arguments: bool, trusted: bool) -> str | None:
    """The reply that refuses an XFORWARD command before its attributes are read, or None.

    Postfix smtpd's order: inside a transaction (after MAIL, before RSET or the end of DATA)
    503, then 501 without arguments, then 550 for a client outside `smtp.trusted_networks`.
    """
    if in_transaction:
        return IN_TRANSACTION
    if not has_arguments:
        return SYNTAX
    if not trusted:
        return NOT_AUTHORIZED
    return None


def decode_xtext(text: str) -> str:
    """RFC 3461 xtext decoded (`a+2Bb` → `a+b`). Text that is not xtext (a "+" without two hex
    digits after it) is taken as it came, as Postfix takes it: its versions before 2.3 sent
    values unencoded (note 5)."""
    if "+" not in text or not _XTEXT.fullmatch(text):
        return text
    return _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), text)


def _masked(value: str) -> str:
    return "".join(c if "!" <= c <= "~" and c not in _SPECIALS else "?" for c in value)


def plain_ip(host: str) -> str | None:
    """`host` as SPF and the messages row want an address: IPv4 dotted, IPv6 compressed, an
    IPv4-mapped IPv6 address as its IPv4; None when it is no IP address."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.scope_id is not None:  # a zone names our interface, not the client
            return None
    return str(ip)


def forwarded_address(value: str) -> str | None:
    """An ADDR value as plain IP text; None when it is no IP address.

    Postfix sends an IPv6 client as `IPv6:2001:db8::1` (RFC 5321's address-literal tag); the
    tag is taken off, and a bare IPv6 address is taken too. A tagged IPv4 address is refused.
    """
    tagged = value[:5].lower() == "ipv6:"
    bare = value[5:] if tagged else value
    ip = plain_ip(bare)
    if ip is None or (tagged and ":" not in bare):
        return None
    return ip


def _attribute(name: str, value: str) -> str | None:
    """One attribute's decoded value as Forwarded holds it; XforwardError when it is wrong."""
    if value.upper() in UNKNOWN:
        return None
    if name == "ADDR":
        addr = forwarded_address(value)
        if addr is None:
            raise XforwardError("501 5.5.4 Bad XFORWARD ADDR syntax")
        return addr
    if name == "PORT":
        if not (value.isascii() and value.isdigit() and len(value) <= 5 and int(value) <= 65535):
            raise XforwardError("501 5.5.4 Bad XFORWARD PORT syntax")
        return value
    if name == "SOURCE":
        if value.upper() not in ("LOCAL", "REMOTE"):
            raise XforwardError("501 5.5.4 Bad XFORWARD SOURCE syntax")
        return value.upper()
    if name == "PROTO" and len(value) > MAX_PROTO:
        raise XforwardError("501 5.5.4 Bad XFORWARD PROTO syntax")
    return _masked(value)


def updated(current: Forwarded | None, arg: str) -> Forwarded:
    """`current` (None before the first XFORWARD) with one command's `attr=value ...` applied.

    Names are case-insensitive, values xtext; `[UNAVAILABLE]` erases an attribute, and one not
    named keeps its value (XFORWARD_README, "XFORWARD Server operation"). A command with any
    fault changes nothing: XforwardError with its 501 (Postfix's smtpd keeps the attributes
    before the faulty one; all or nothing is simpler to reason about and no client relies on
    the difference). The state stays bounded: seven fields of at most 255 characters each.
    """
    pairs = arg.split()
    if not pairs:
        raise XforwardError(SYNTAX)
    changes: dict[str, str | None] = {}
    for pair in pairs:
        name, eq, raw = pair.partition("=")
        if not eq or not raw:
            raise XforwardError(PAIR_EXPECTED)
        if len(raw) > MAX_VALUE:
            raise XforwardError(VALUE_TOO_LONG)
        attribute = name.upper()
        if attribute not in ATTRIBUTES:
            # Not the name as sent: it could be anything the line holds.
            raise XforwardError("501 5.5.4 Bad XFORWARD attribute name")
        changes[attribute.lower()] = _attribute(attribute, decode_xtext(raw))
    return dataclasses.replace(current or Forwarded(), **changes)


def sender_identity(forwarded: Forwarded | None, client_host: str | None
                    ) -> tuple[str | None, str | None]:
    """(client_ip, client_helo) for sender authentication: the forwarded client when the relay
    gave its address, else the connection's own client (the PROXY header's source or the
    socket peer) with None for the HELO, which then is the session's ("" for none at all).

    A forwarded ADDR of [UNAVAILABLE] is "a forwarded local submission. In this case the SMTP
    server should ignore other client attributes" (XFORWARD_README): the relay is the origin.
    """
    if forwarded is not None and forwarded.addr is not None:
        # "" when the relay forwarded no HELO: the session's own is the relay's, and forwarded
        # information is never mixed with the current session's (XFORWARD_README, note 4).
        return forwarded.addr, forwarded.helo or ""
    if client_host is None:
        return None, None
    return plain_ip(client_host.split("%", 1)[0]), None
