"""The HAProxy PROXY protocol header (v1 text, v2 binary), parsed from bytes with nothing else.

Pure: it is fed whatever has arrived so far and says "need more", "here is the header" or
raises `ProxyError`; reading the socket and the time limit belong to session.py. It never
accepts more than a header may hold (v1 107 bytes, v2 536), so a peer cannot make us buffer.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Literal

V1_MAX = 107  # "PROXY TCP6 " + two full IPv6 addresses + two ports + CRLF
V2_MAX = 536  # 16 bytes of fixed header + 520 of addresses and TLVs (the spec's bound)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_HEADER = V2_MAX
_V1_PREFIX = b"PROXY "
_V1_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


# How a header failed: no PROXY signature at all, longer than its version allows, anything else
# wrong in it, or the connection closed before it ended. Logged as `kind`; stable for tests.
ProxyFault = Literal["no_signature", "too_long", "malformed", "closed"]


class ProxyError(ValueError):
    """The bytes are not a PROXY header we accept: `fault` says how, the message says why in
    words (never the peer's data)."""

    def __init__(self, message: str, fault: ProxyFault = "malformed") -> None:
        super().__init__(message)
        self.fault: ProxyFault = fault


@dataclass(frozen=True)
class ProxyHeader:
    """A complete header.

    `source` is the client the proxy relays, as (address, port); None when the header says
    to use the connection's own endpoints (v1 UNKNOWN, v2 LOCAL such as a health check, v2
    UNSPEC or AF_UNIX). `length` is how many bytes the header took; what follows is SMTP.
    """

    version: int
    source: tuple[str, int] | None
    length: int


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`, or None while more bytes are needed.

    Raises ProxyError as soon as the bytes cannot become a valid header (no signature,
    malformed fields, longer than the version allows).
    """
    if not data:
        return None
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    if data[:1] == _V1_PREFIX[:1]:
        return _parse_v1(data)
    raise ProxyError("no PROXY signature", "no_signature")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    if not data.startswith(_V1_PREFIX[:len(data)]):
        raise ProxyError("no PROXY signature", "no_signature")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyError(f"v1 header longer than {V1_MAX} bytes", "too_long")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyError("v1 header not ended by CRLF")
        return None
    try:
        line = data[len(_V1_PREFIX):end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyError("v1 header is not ASCII") from None
    fields = line.split(" ")
    if fields[0] == "UNKNOWN":  # the receiver must ignore whatever else the line holds
        return ProxyHeader(1, None, end + 2)
    if fields[0] not in ("TCP4", "TCP6") or len(fields) != 5:
        raise ProxyError("v1 header is not TCP4, TCP6 or UNKNOWN with four fields")
    version = 4 if fields[0] == "TCP4" else 6
    src, _ = (_v1_address(text, version) for text in fields[1:3])
    src_port, _ = (_v1_port(text) for text in fields[3:5])
    return ProxyHeader(1, (src, src_port), end + 2)


def _v1_address(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text) if "%" not in text else None
    except ValueError:
        ip = None
    if ip is None or ip.version != version:
        raise ProxyError(f"v1 address is not IPv{version}")
    return str(ip)


def _v1_port(text: str) -> int:
    if not _V1_PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyError("v1 port is not 0-65535")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyError("no PROXY signature", "no_signature")
        return None
    if not data.startswith(V2_SIGNATURE):
        raise ProxyError("no PROXY signature", "no_signature")
    ver_cmd, fam_proto, size = struct.unpack("!BBH", data[12:16])
    if ver_cmd >> 4 != 2:
        raise ProxyError("v2 version nibble is not 2")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyError("v2 command is neither LOCAL nor PROXY")
    if 16 + size > V2_MAX:
        raise ProxyError(f"v2 header longer than {V2_MAX} bytes", "too_long")
    if len(data) < 16 + size:
        return None
    length = 16 + size
    if command == 0:  # LOCAL: the proxy speaks for itself (health checks); addresses ignored
        return ProxyHeader(2, None, length)
    family, transport = fam_proto >> 4, fam_proto & 0x0F
    if family > 3 or transport > 2:
        raise ProxyError("v2 address family or transport unknown")
    if family == 0:  # UNSPEC: use the connection's own endpoints
        return ProxyHeader(2, None, length)
    if transport != 1:
        raise ProxyError("v2 transport is not a stream")
    if family == 3:  # AF_UNIX: paths, not an address to check; the proxy's own address counts
        return ProxyHeader(2, None, length)
    address_size = 4 if family == 1 else 16
    if size < 2 * address_size + 4:
        raise ProxyError("v2 address block truncated")
    body = data[16:length]
    src = ipaddress.ip_address(body[:address_size])
    (port,) = struct.unpack("!H", body[2 * address_size:2 * address_size + 2])
    return ProxyHeader(2, (str(src), port), length)
