"""STARTTLS, require_tls and AUTH through the real daemon with smtplib, aiosmtplib and raw sockets.

One daemon serves the module: TLS with a certificate made by the test, `require_tls`, one AUTH
user, and only 127.0.0.1 trusted, so a client bound to 127.0.0.2 is an untrusted relay.
"""

from __future__ import annotations

import asyncio
import base64
import json
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from daemon.passwords import hash_password
from daemon.smtp import policy
from tests.certs import client_context, make_cert
from tests.harness import Daemon, queued_id, running_daemon, write_config
from tests.mail import plain

KEY = "pr_tls_auth_test_key_0123456789abcdef"
USER, PASSWORD = "relay", "correct horse battery staple"
UNTRUSTED = "127.0.0.2"  # loopback, but outside trusted_networks = ["127.0.0.1/32"]

SMTP = """tls_cert = "certs/server.crt"
tls_key = "certs/server.key"
require_tls = true
trusted_networks = ["127.0.0.1/32"]
auth_users = {{ {user} = "{hash}" }}"""
AGENT = """[[agents]]
name = "a"
addresses = ["a@t.test"]
api_key_env = "A_KEY"
"""


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("secure")
    make_cert(root / "certs")
    smtp = SMTP.format(user=USER, hash=hash_password(PASSWORD))
    with running_daemon(root, smtp=smtp, extra=AGENT, env={"A_KEY": KEY}) as d:
        yield d


def client(d: Daemon, source: str = "127.0.0.1") -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30, source_address=(source, 0))


def secured(d: Daemon, source: str = "127.0.0.1") -> smtplib.SMTP:
    """A client that has said EHLO, STARTTLS (verifying the test certificate) and EHLO again."""
    s = client(d, source)
    s.ehlo("client.example")
    code, _ = s.starttls(context=client_context(d.root / "certs" / "server.crt"))
    assert code == 220
    s.ehlo("client.example")
    return s


def ehlo_lines(s: smtplib.SMTP) -> list[str]:
    return [line.split()[0] for line in s.ehlo_resp.decode().splitlines()] if s.ehlo_resp else []


def raw_message(d: Daemon, msg_id: str) -> bytes:
    with d.api(KEY) as api:
        link = api.post(f"/v1/messages/{msg_id}/raw/download").json()
    return httpx.get(link["url"]).content


def reply_line(code: int, text: bytes) -> str:
    """An smtplib reply as the daemon wrote it, to compare with the policy's reply."""
    return f"{code} {text.decode()}"


def plain_auth(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_starttls_is_offered_before_tls_and_mail_goes_over_it(secure: Daemon) -> None:
    with client(secure) as s:
        s.ehlo("client.example")
        before = ehlo_lines(s)
        s.starttls(context=client_context(secure.root / "certs" / "server.crt"))
        s.ehlo("client.example")
        after = ehlo_lines(s)
        s.mail("s@example.org")
        s.rcpt("a@t.test")
        code, reply = s.data(plain("a@t.test").as_bytes())
        already = s.docmd("STARTTLS")
    assert "STARTTLS" in before and "AUTH" not in before
    assert "STARTTLS" not in after and "AUTH" in after
    assert (already[0], already[1][:5]) == (503, b"5.5.1")
    assert code == 250
    trace = raw_message(secure, queued_id(reply)).split(b"\r\n\r\n", 1)[0]
    assert b"from client.example ([127.0.0.1])" in trace
    assert b"with ESMTPS id" in trace  # RFC 3848: over TLS, not authenticated


def test_mail_before_starttls_is_refused_with_530(secure: Daemon) -> None:
    with client(secure) as s:
        s.ehlo("client.example")
        code, text = s.mail("s@example.org")
        assert reply_line(code, text) == policy.MUST_STARTTLS
        assert s.noop()[0] == 250  # the connection stays open for STARTTLS


def test_auth_before_tls_is_refused_with_538(secure: Daemon) -> None:
    with client(secure, UNTRUSTED) as s:
        code, _ = s.ehlo("relay.example")
        assert code == 250  # greeted although untrusted: it may authenticate
        code, text = s.docmd("AUTH", "PLAIN " + plain_auth(USER, PASSWORD))
        assert (code, text[:6]) == (538, b"5.7.11")


def test_an_untrusted_relay_must_authenticate_before_mail(secure: Daemon) -> None:
    with secured(secure, UNTRUSTED) as s:
        assert reply_line(*s.mail("s@example.org")) == policy.AUTH_REQUIRED
        s.user, s.password = USER, PASSWORD
        # PLAIN without an initial response: the password travels after a 334.
        code, text = s.auth("PLAIN", s.auth_plain, initial_response_ok=False)
        assert (code, text[:5]) == (235, b"2.7.0")
        assert s.docmd("AUTH", "PLAIN " + plain_auth(USER, PASSWORD))[0] == 503
        assert s.mail("s@example.org")[0] == 250
        assert s.rcpt("a@t.test")[0] == 250
        code, reply = s.data(plain("a@t.test").as_bytes())
    assert code == 250
    trace = raw_message(secure, queued_id(reply)).split(b"\r\n\r\n", 1)[0]
    assert f"[{UNTRUSTED}]".encode() in trace and b"with ESMTPSA id" in trace
    ok = [e for e in secure.events("smtp.authenticated") if e["mechanism"] == "PLAIN"]
    assert ok and ok[-1]["user"] == USER and ok[-1]["peer"].startswith(UNTRUSTED)


def test_auth_login_and_aiosmtplib_deliver(secure: Daemon) -> None:
    with secured(secure, UNTRUSTED) as s:
        s.user, s.password = USER, PASSWORD
        assert s.auth("LOGIN", s.auth_login)[0] == 235

    async def deliver() -> str:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=secure.smtp_port, start_tls=True,
                            tls_context=client_context(secure.root / "certs" / "server.crt"),
                            source_address=(UNTRUSTED, 0), timeout=30)
        await c.connect()
        try:
            await c.login(USER, PASSWORD)
            errors, reply = await c.send_message(plain("a@t.test"), sender="s@example.org",
                                                 recipients=["a@t.test"])
            assert not errors
            return reply
        finally:
            await c.quit()

    reply = asyncio.run(deliver())
    assert secure.wait_message(KEY, queued_id(reply))["status"] == "ready"


def test_the_third_failed_auth_closes_the_connection_and_logs_no_credentials(
        secure: Daemon) -> None:
    wrong = "Tr0ub4dor&3-wrong"
    with secured(secure, UNTRUSTED) as s:
        start = len(secure.events("smtp.auth_failed"))
        code, text = s.docmd("AUTH", "PLAIN " + plain_auth(USER, wrong))
        assert (code, text[:5]) == (535, b"5.7.8")
        assert s.docmd("AUTH", "PLAIN " + plain_auth("mallory-the-guesser", PASSWORD))[0] == 535
        s.putcmd("AUTH", "LOGIN " + base64.b64encode(b"mallory-the-guesser").decode())
        assert s.getreply() == (334, base64.b64encode(b"Password:"))
        s.putcmd(base64.b64encode(wrong.encode()).decode())
        assert s.getreply()[0] == 535
        code, text = s.getreply()
        assert (code, text[:5]) == (421, b"4.7.0")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()
    failed = secure.wait_for(lambda: secure.events("smtp.auth_failed")[start:]
                             if len(secure.events("smtp.auth_failed")) >= start + 3 else None,
                             5, "three failures logged")
    assert [e["mechanism"] for e in failed] == ["PLAIN", "PLAIN", "LOGIN"]
    secure.wait_for(lambda: secure.events("smtp.auth_closed"), 5, "the close logged")
    everything = json.dumps(secure.logs) + "\n".join(secure.stderr)
    for secret in (wrong, PASSWORD, "mallory", plain_auth(USER, wrong)):
        assert secret not in everything


def test_a_failed_handshake_closes_only_that_connection(secure: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", secure.smtp_port), timeout=10) as sock:
        sock.recv(1024)
        sock.sendall(b"EHLO c\r\n")
        while b"250 " not in sock.recv(4096):
            pass
        sock.sendall(b"STARTTLS\r\n")
        assert sock.recv(1024).startswith(b"220")
        sock.sendall(b"this is not a TLS client hello\r\n" * 4)
        assert sock.recv(1024) in (b"", b"\x15\x03\x01\x00\x02\x02\x16")  # closed (or an alert)
    with secured(secure) as s:
        assert s.noop()[0] == 250


@pytest.mark.parametrize(("broken", "named"), [("key", "smtp.tls_key"),
                                               ("cert", "smtp.tls_cert")])
def test_a_bad_tls_file_stops_serve_with_status_2_naming_the_key(tmp_path: Path, broken: str,
                                                                 named: str) -> None:
    cert, key = make_cert(tmp_path / "certs")
    (key if broken == "key" else cert).unlink()
    config = write_config(tmp_path, smtp=f'tls_cert = "{cert}"\ntls_key = "{key}"')
    done = subprocess.run([sys.executable, "-m", "daemon", "serve", "--config", str(config)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr


def test_sighup_rereads_the_certificate_and_keeps_open_connections(tmp_path: Path) -> None:
    import shutil
    import signal

    root = tmp_path / "reload"
    old_cert, _ = make_cert(root / "certs")
    saved = root / "old.crt"
    shutil.copy(old_cert, saved)
    with running_daemon(root, smtp='tls_cert = "certs/server.crt"\ntls_key = "certs/server.key"',
                        extra=AGENT, env={"A_KEY": KEY}) as d:
        before = secured(d)  # open across the reload, on the old certificate
        make_cert(root / "certs")  # new key pair in the same files
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for(lambda: d.events("daemon.reloaded"), 10, "the reload")
        with pytest.raises(ssl.SSLCertVerificationError):  # the old cert no longer matches
            s = client(d)
            s.ehlo("client.example")
            s.starttls(context=client_context(saved))
        fresh = secured(d)  # verified against the new certificate
        for conn in (before, fresh):
            conn.mail("s@example.org")
            conn.rcpt("a@t.test")
            assert conn.data(plain("a@t.test").as_bytes())[0] == 250
            conn.quit()
        # A broken file at the next reload keeps the certificate that works.
        (root / "certs" / "server.key").write_text("not a key")
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for(lambda: d.events("daemon.reload_failed"), 10, "the failed reload")
        again = secured(d)
        again.quit()
