"""PROXY protocol v1/v2 through the real daemon: the proxied client is the peer everywhere, and
a connection without a valid header from a trusted proxy is closed without a greeting.

One daemon serves the module: `proxy_protocol` with a 1 s header limit, STARTTLS without AUTH,
and 127.0.0.1/32 (the "proxy") plus two documentation networks (the "clients") trusted.
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from daemon.smtp.proxy import V2_SIGNATURE
from tests.certs import client_context, make_cert
from tests.harness import Daemon, queued_id, running_daemon
from tests.mail import plain

KEY = "pr_proxy_test_key_0123456789abcdef"
SMTP = """proxy_protocol = true
proxy_protocol_timeout = "1s"
tls_cert = "certs/server.crt"
tls_key = "certs/server.key"
trusted_networks = ["127.0.0.1/32", "198.51.100.0/24", "2001:db8::/32"]"""
AGENT = """[[agents]]
name = "a"
addresses = ["a@t.test"]
api_key_env = "A_KEY"
"""


def v1(src: str, sport: int = 40000) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    dst = "2001:db8::1" if ":" in src else "203.0.113.1"
    return f"PROXY {family} {src} {dst} {sport} 25\r\n".encode()


def v2(src: str | None, sport: int = 40000) -> bytes:
    """A v2 PROXY header for `src`, or a LOCAL one (a health check) when `src` is None."""
    if src is None:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"
    ip = ipaddress.ip_address(src)
    dst = ipaddress.ip_address("2001:db8::1" if ip.version == 6 else "203.0.113.1")
    body = ip.packed + dst.packed + struct.pack("!HH", sport, 25)
    family = 0x21 if ip.version == 6 else 0x11
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


class ProxiedSMTP(smtplib.SMTP):
    """smtplib behind a "load balancer": the PROXY header goes first on the new socket."""

    def __init__(self, header: bytes, port: int, source: str = "127.0.0.1") -> None:
        self.header = header
        super().__init__("127.0.0.1", port, timeout=30, source_address=(source, 0))

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        sock.sendall(self.header)
        return sock


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("proxied")
    make_cert(root / "certs")
    with running_daemon(root, smtp=SMTP, extra=AGENT, env={"A_KEY": KEY}) as d:
        yield d


def trace_of(d: Daemon, msg_id: str) -> bytes:
    with d.api(KEY) as api:
        link = api.post(f"/v1/messages/{msg_id}/raw/download").json()
    return httpx.get(link["url"]).content.split(b"\r\n\r\n", 1)[0]


def transaction(d: Daemon, msg_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = d.wait_for(
        lambda: [e for e in d.events("smtp.transaction") if e["message_id"] == msg_id], 5,
        "the transaction logged")
    return found[0]


def greeting(sock: socket.socket) -> bytes:
    """What the daemon says first; b"" when it closes without a word (a close with our bytes
    still unread is a reset)."""
    data = b""
    while b"\r\n" not in data:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_a_v1_header_makes_the_proxied_client_the_peer(proxied: Daemon) -> None:
    with ProxiedSMTP(v1("198.51.100.7"), proxied.smtp_port) as s:
        s.ehlo("client.example")
        s.mail("s@example.org")
        s.rcpt("a@t.test")
        code, reply = s.data(plain("a@t.test").as_bytes())
    assert code == 250
    msg_id = queued_id(reply)
    assert b"from client.example ([198.51.100.7])" in trace_of(proxied, msg_id)
    assert transaction(proxied, msg_id)["peer"] == "198.51.100.7:40000"


def test_a_v2_ipv6_client_stays_the_peer_after_starttls(proxied: Daemon) -> None:
    with ProxiedSMTP(v2("2001:db8::7", 40001), proxied.smtp_port) as s:
        s.ehlo("client.example")
        s.starttls(context=client_context(proxied.root / "certs" / "server.crt"))
        s.ehlo("client.example")
        assert s.ehlo_resp is not None and b"AUTH" not in s.ehlo_resp  # no auth_users
        assert s.docmd("AUTH", "PLAIN AGEAYg==")[0] == 502
        s.mail("s@example.org")
        s.rcpt("a@t.test")
        code, reply = s.data(plain("a@t.test").as_bytes())
    assert code == 250
    msg_id = queued_id(reply)
    trace = trace_of(proxied, msg_id)
    assert b"([2001:db8::7])" in trace and b"with ESMTPS id" in trace
    assert transaction(proxied, msg_id)["peer"] == "2001:db8::7:40001"


def test_a_proxied_client_outside_trusted_networks_gets_554(proxied: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", proxied.smtp_port), timeout=10) as sock:
        sock.sendall(v1("203.0.113.9"))
        assert greeting(sock).startswith(b"554 5.7.1")


def test_a_v2_local_health_check_is_served_as_the_proxy(proxied: Daemon) -> None:
    with ProxiedSMTP(v2(None), proxied.smtp_port) as s:
        assert s.noop()[0] == 250


def test_commands_sent_with_the_header_are_kept(proxied: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", proxied.smtp_port), timeout=10) as sock:
        sock.sendall(v1("198.51.100.8") + b"NOOP\r\nQUIT\r\n")
        replies = b""
        while chunk := sock.recv(4096):
            replies += chunk
    assert [line[:3] for line in replies.splitlines()] == [b"220", b"250", b"221"]


@pytest.mark.parametrize(("sent", "kind"), [
    (b"", "timeout"),
    (b"EHLO client.example\r\n", "no_signature"),
    (b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 25 and then some more\r\n", "malformed"),
    (b"PROXY UNKNOWN " + b"x" * 120, "too_long"),  # v1: past 107 bytes
    (V2_SIGNATURE + b"\x21\x11\x02\x10", "too_long"),  # v2: declares past 536
])
def test_a_missing_or_bad_header_is_closed_without_a_greeting(proxied: Daemon, sent: bytes,
                                                              kind: str) -> None:
    before = len(proxied.events("smtp.proxy_refused"))
    with socket.create_connection(("127.0.0.1", proxied.smtp_port), timeout=10) as sock:
        sock.sendall(sent)
        assert greeting(sock) == b""
    refused = proxied.wait_for(lambda: proxied.events("smtp.proxy_refused")[before:], 5,
                               "the refusal logged")
    assert [e["kind"] for e in refused] == [kind]


def test_a_proxy_outside_trusted_networks_is_closed_without_a_greeting(proxied: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", proxied.smtp_port), timeout=10,
                                  source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(v1("198.51.100.7"))
        assert greeting(sock) == b""
    proxied.wait_for(lambda: [e for e in proxied.events("smtp.proxy_refused")
                              if e["kind"] == "untrusted_proxy"], 5, "the refusal logged")
