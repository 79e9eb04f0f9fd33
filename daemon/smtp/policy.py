"""SMTP policy as plain functions of the situation: who may deliver and what each refusal says.

No sockets here, so every reply can be tested directly. The replies are the SPEC §4 table; a
failure on our side is always 4xx, so a relay keeps the message and retries.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSED_UNTRUSTED = "554 5.7.1 Relay access denied: your address is not trusted"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: no such mailbox"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
OTHER_ENCRYPTION = ("452 4.5.3 Recipient's mail is stored with other encryption: send it in "
                    "another transaction")
NO_KEY_FOR_ENCRYPTION = ("550 5.7.1 Recipient has no OpenPGP key and this server stores mail "
                         "only encrypted")
ADDRESS_TOO_LONG = "501 5.1.3 Recipient address too long (254 octets at most)"
BAD_RECIPIENT_SYNTAX = "501 5.1.3 Bad recipient address syntax"
BAD_SENDER_SYNTAX = "501 5.1.7 Bad sender address syntax"
# RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its angle brackets.
MAX_ADDRESS_OCTETS = 254
MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
TRY_LATER = "451 4.3.0 Temporary failure, please try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
SENDER_OK = "250 2.1.0 Ok"
RECIPIENT_OK = "250 2.1.5 Ok"
IDLE_TIMEOUT = "421 4.4.2 Idle for too long, closing connection"
DATA_TOO_SLOW = "421 4.4.2 Message data arriving too slowly, closing connection"
# Bytes a second DATA must average for its time budget (`smtp.timeout`) not to run out: far
# below any real link (50 MiB at this rate is a day), far above a slowloris's byte a second.
# The default of Postfix's smtpd_min_data_rate.
MIN_DATA_RATE = 500
TLS_ALREADY_ACTIVE = "503 5.5.1 TLS already active"
MUST_STARTTLS = "530 5.7.0 Must issue a STARTTLS command first"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_NOT_OFFERED = "502 5.5.1 AUTH not available"
TOO_MANY_AUTH_FAILURES = "421 4.7.0 Too many failed authentication attempts, closing connection"
# AUTH commands that end unauthenticated before the connection is closed: enough for a typo,
# and a guesser must reconnect (and pay for the TLS handshake) every three tries.
MAX_AUTH_FAILURES = 3
# Commands that deliver nothing, per connection; past the limit aiosmtpd answers "421 4.7.0 …
# sent too many times" and closes, so a client cannot hold a slot for ever with a NOOP every
# few seconds (the idle timer resets on every valid command). Postfix's smtpd_junk_command_limit
# is 100 as well; the commands of real deliveries (MAIL, RCPT, DATA, RSET) stay unbounded, as a
# relay may send thousands of messages down one connection.
COMMAND_CALL_LIMITS = {"NOOP": 100, "VRFY": 20, "EXPN": 20, "HELP": 20, "HELO": 20, "EHLO": 20,
                       "STARTTLS": 2, "*": 2**62}


def parse_networks(networks: Iterable[str]) -> tuple[Network, ...]:
    """Parse the `smtp.trusted_networks` list."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def is_trusted(peer_host: str | None, networks: Sequence[Network]) -> bool:
    """True when the client's address lies in one of `networks` (IPv4-mapped IPv6 included)."""
    if not peer_host:
        return False
    try:
        ip = ipaddress.ip_address(peer_host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def connection_refusal(peer_host: str | None, networks: Sequence[Network],
                       open_connections: int, max_connections: int,
                       draining: bool, auth_offered: bool = False) -> str | None:
    """The greeting that refuses this connection, or None to serve it.

    With `smtp.auth_users` set (`auth_offered`) a client outside `trusted_networks` is served:
    it may deliver once it has authenticated (see `mail_refusal`).
    """
    if draining:
        return SHUTTING_DOWN
    if not auth_offered and not is_trusted(peer_host, networks):
        return REFUSED_UNTRUSTED
    if open_connections > max_connections:
        return TOO_MANY_CONNECTIONS
    return None


def mail_refusal(*, tls: bool, require_tls: bool, trusted: bool, authenticated: bool
                 ) -> str | None:
    """The reply that refuses MAIL for who the client is and how it came, or None.

    `require_tls` applies to every client, trusted or not. A client outside
    `trusted_networks` reaches MAIL only when AUTH is offered, and must have authenticated;
    a client inside needs no AUTH.
    """
    if require_tls and not tls:
        return MUST_STARTTLS
    if not trusted and not authenticated:
        return AUTH_REQUIRED
    return None


def declared_size_refusal(mail_options: Sequence[str], max_size: int) -> str | None:
    """552 when MAIL FROM declares SIZE above the limit; None otherwise."""
    for opt in mail_options:
        name, _, value = opt.partition("=")
        if name.upper() == "SIZE" and value.isdigit() and int(value) > max_size:
            return MESSAGE_TOO_BIG
    return None


def _malformed(address: str) -> bool:
    """True for an address with a control character or bytes that are not UTF-8 (aiosmtpd
    hands those on as surrogates). RFC 5321 paths hold neither, and neither fits a database
    text column: the message could never be stored and the relay would hear 451 for ever."""
    return any(ord(ch) < 32 or ord(ch) == 127 or 0xD800 <= ord(ch) <= 0xDFFF for ch in address)


def address_refusal(address: str) -> str | None:
    """501 for a recipient longer than SMTP allows (it could be no mailbox of ours, and no
    database column need hold it) or malformed (`_malformed`); None otherwise."""
    if len(address.encode("utf-8", "surrogateescape")) > MAX_ADDRESS_OCTETS:
        return ADDRESS_TOO_LONG
    if _malformed(address):
        return BAD_RECIPIENT_SYNTAX
    return None


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(
    rf"\s*<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*(?![ \t(])(.*)\Z",
    re.S)


def simple_path(arg: str) -> tuple[str, str] | None:
    """(address, parameters) of `<dot-atom@domain> PARAMS`, the form nearly every relay sends,
    exactly as aiosmtpd's RFC 5322 parser would split it; None for anything else (quoted local
    parts, comments, address literals, a bare address, `<>`), which that parser then handles.
    The parser (and the Protocol class aiosmtpd defines on every call) was about a tenth of
    the event loop's time for small messages."""
    m = _SIMPLE_PATH.match(arg)
    return None if m is None else (m.group(1), m.group(2))


def sender_refusal(address: str) -> str | None:
    """501 for a malformed MAIL FROM address (`_malformed`); None otherwise."""
    return BAD_SENDER_SYNTAX if _malformed(address) else None


def recipient_refusal(accepted_so_far: int, max_recipients: int, known: bool,
                      keyless_refused: bool = False, other_encryption: bool = False
                      ) -> str | None:
    """The reply that refuses one RCPT, or None to accept it.

    `keyless_refused`: the address is an agent's without an OpenPGP key while
    `encryption.at_rest = "required"`. `other_encryption`: this recipient's mail would be
    stored encrypted and the transaction's first recipient's not, or the reverse; one message
    is stored one way, so the relay is asked (452, as for too many recipients) to send it again
    in a transaction of its own.
    """
    if accepted_so_far >= max_recipients:
        return TOO_MANY_RECIPIENTS
    if not known:
        return UNKNOWN_RECIPIENT
    if keyless_refused:
        return NO_KEY_FOR_ENCRYPTION
    if other_encryption:
        return OTHER_ENCRYPTION
    return None
