"""The PROXY header parser fed bytes: v1 and v2, split anywhere, malformed, LOCAL, UNKNOWN, IPv6."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from daemon.smtp.proxy import (
    V1_MAX,
    V2_MAX,
    V2_SIGNATURE,
    ProxyError,
    ProxyHeader,
    parse_proxy_header,
)


def v2(body: bytes = b"", command: int = 1, family: int = 0x11, version: int = 2) -> bytes:
    """A v2 header: `family` is the address-family nibble then the transport nibble."""
    return V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", len(body)) \
        + body


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
            + struct.pack("!HH", sport, dport))


V1_TCP4 = b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 25\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n"
V2_TCP4 = v2(inet("198.51.100.7", "203.0.113.1", 40000, 25))
V2_TCP6 = v2(inet("2001:db8::7", "2001:db8::1", 40001, 25), family=0x21)


@pytest.mark.parametrize(("header", "expected"), [
    (V1_TCP4, ProxyHeader(1, ("198.51.100.7", 40000), len(V1_TCP4))),
    (V1_TCP6, ProxyHeader(1, ("2001:db8::7", 40000), len(V1_TCP6))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, 15)),
    (b"PROXY UNKNOWN ff::1 whatever 1 2\r\n", ProxyHeader(1, None, 34)),
    (V2_TCP4, ProxyHeader(2, ("198.51.100.7", 40000), 28)),
    (V2_TCP6, ProxyHeader(2, ("2001:db8::7", 40001), 52)),
])
def test_a_complete_header_names_the_client_and_its_length(header: bytes,
                                                           expected: ProxyHeader) -> None:
    assert parse_proxy_header(header) == expected
    # What follows is the client's SMTP, left for the caller.
    assert parse_proxy_header(header + b"EHLO client\r\n") == expected


@pytest.mark.parametrize("header", [V1_TCP4, V1_TCP6, V2_TCP4, V2_TCP6, b"PROXY UNKNOWN\r\n"])
def test_every_prefix_of_a_header_asks_for_more(header: bytes) -> None:
    for cut in range(len(header)):
        assert parse_proxy_header(header[:cut]) is None, cut


def test_v2_local_is_the_proxy_speaking_for_itself() -> None:
    # A health check: the addresses (if any) are ignored, the connection's own are used.
    assert parse_proxy_header(v2(command=0, family=0x00)) == ProxyHeader(2, None, 16)
    local_with_addresses = v2(inet("192.0.2.1", "192.0.2.2", 1, 2), command=0)
    assert parse_proxy_header(local_with_addresses) == ProxyHeader(2, None, 28)


def test_v2_unspec_and_unix_sockets_leave_the_connections_own_address() -> None:
    assert parse_proxy_header(v2(family=0x00)) == ProxyHeader(2, None, 16)
    unix = v2(b"/run/a".ljust(108, b"\0") + b"/run/b".ljust(108, b"\0"), family=0x31)
    assert parse_proxy_header(unix) == ProxyHeader(2, None, 16 + 216)


def test_v2_tlvs_after_the_addresses_are_skipped() -> None:
    tlv = b"\x05\x00\x04abcd"  # PP2_TYPE_UNIQUE_ID
    header = v2(inet("198.51.100.9", "203.0.113.1", 5, 25) + tlv)
    assert parse_proxy_header(header) == ProxyHeader(2, ("198.51.100.9", 5), len(header))


@pytest.mark.parametrize("data", [
    b"EHLO client.example\r\n",
    b"proxy TCP4 198.51.100.7 203.0.113.1 40000 25\r\n",
    b"PROXYTCP4",
    b"PROXY TCP5 198.51.100.7 203.0.113.1 40000 25\r\n",
    b"PROXY UDP4 198.51.100.7 203.0.113.1 40000 25\r\n",
    b"PROXY TCP4 2001:db8::7 203.0.113.1 40000 25\r\n",
    b"PROXY TCP6 198.51.100.7 2001:db8::1 40000 25\r\n",
    b"PROXY TCP6 fe80::1%eth0 2001:db8::1 40000 25\r\n",
    b"PROXY TCP4 198.51.100.7 203.0.113.1 65536 25\r\n",
    b"PROXY TCP4 198.51.100.7 203.0.113.1 040000 25\r\n",
    b"PROXY TCP4 198.51.100.7 203.0.113.1 -1 25\r\n",
    b"PROXY TCP4 198.51.100.7 203.0.113.1 4x 25\r\n",
    b"PROXY TCP4 198.51.100.7 203.0.113.1 40000\r\n",
    b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 25 extra\r\n",
    b"PROXY TCP4 198.51.100.7  203.0.113.1 40000 25\r\n",
    b"PROXY TCP4 198.051.100.7 203.0.113.1 40000 25\r\n",
    b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 25\n",
    b"PROXY TCP4 198.51.100.7\r203.0.113.1 40000 25\r\n",
    "PROXY TCP4 198.51.100.7 203.0.113.1 4000é 25\r\n".encode(),
    b"PROXY UNKNOWN " + b"x" * 200,
    V2_SIGNATURE[:11] + b"X" + b"\x21\x11\x00\x00",
    v2(version=1),
    v2(command=2),
    v2(inet("198.51.100.7", "203.0.113.1", 1, 2), family=0x12),  # UDP
    v2(b"\0" * 11),  # an IPv4 block is 12 bytes
    v2(inet("198.51.100.7", "203.0.113.1", 1, 2), family=0x21),  # too short for IPv6
    v2(family=0x41),
])
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyError):
        parse_proxy_header(data)


def test_a_header_is_refused_as_soon_as_it_cannot_fit_the_bound() -> None:
    # v1: no CRLF within 107 bytes; v2: a declared length past 536, known after 16 bytes.
    assert parse_proxy_header(b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15)) is None
    with pytest.raises(ProxyError) as v1_err:
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * (V1_MAX - 14))
    assert v1_err.value.fault == "too_long"
    longest = v2(b"\0" * (V2_MAX - 16), family=0x00)
    assert parse_proxy_header(longest) == ProxyHeader(2, None, V2_MAX)
    too_long = v2(b"\0" * (V2_MAX - 15), family=0x00)
    with pytest.raises(ProxyError) as v2_err:
        parse_proxy_header(too_long[:16])
    assert v2_err.value.fault == "too_long"


def test_nothing_yet_is_not_an_error() -> None:
    assert parse_proxy_header(b"") is None
