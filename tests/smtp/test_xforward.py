"""XFORWARD through the real daemon: offered to and taken from `smtp.trusted_networks` only, the
forwarded client stored as the message's client (messages.client_ip, messages.helo) for its one
transaction, every refusal leaving the session usable, over SMTP and LMTP; and a real Postfix
in front forwarding the client it served. The parsing itself is checked without a socket at the
end.

One daemon serves the module: only 127.0.0.1 trusted, and AUTH offered (so TLS too), so that a
client bound to 127.0.0.2 is greeted as an untrusted relay instead of refused at connect.
"""

from __future__ import annotations

import base64
import contextlib
import smtplib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.passwords import hash_password
from daemon.smtp.xforward import (
    Forwarded,
    XforwardError,
    command_refusal,
    decode_xtext,
    updated,
)
from tests import pgserver
from tests.capture import free_port
from tests.certs import client_context, make_cert
from tests.harness import TEST_DATABASE, Daemon, Raw, queued_id, running_daemon
from tests.mail import plain
from tests.postfix import ensure_installed, master_pids, private_postfix, smtp_relay

KEY = "pr_xforward_test_key_0123456789abcdef"
RCPT = "a@t.test"
USER, PASSWORD = "relay", "correct horse battery staple"
UNTRUSTED = "127.0.0.2"  # loopback, but outside trusted_networks = ["127.0.0.1/32"]
SMTP = """tls_cert = "certs/server.crt"
tls_key = "certs/server.key"
trusted_networks = ["127.0.0.1/32"]
auth_users = {{ {user} = "{hash}" }}"""
AGENT = f"""[[agents]]
name = "a"
addresses = ["{RCPT}"]
api_key_env = "A_KEY"
"""
FORWARD = "ADDR=203.0.113.7 HELO=mx.example.org NAME=mx.example.org PROTO=ESMTP"


@pytest.fixture(scope="module")
def xf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("xforward")
    make_cert(root / "certs")
    smtp = SMTP.format(user=USER, hash=hash_password(PASSWORD))
    with running_daemon(root, smtp=smtp, extra=AGENT, env={"A_KEY": KEY}) as d:
        yield d


def client(d: Daemon, source: str = "127.0.0.1", port: int | None = None) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port or d.smtp_port, timeout=30,
                        source_address=(source, 0))


def status(reply: tuple[int, bytes]) -> str:
    """The code and enhanced status of a reply: `250 2.0.0`."""
    code, text = reply
    return f"{code} {text.decode().split()[0]}"


def xforward(s: smtplib.SMTP, attributes: str) -> str:
    return status(s.docmd("XFORWARD", attributes))


def deliver(s: smtplib.SMTP, sender: str = "s@example.org") -> str:
    """One transaction on an open session; the stored message's id."""
    assert s.mail(sender)[0] == 250
    assert s.rcpt(RCPT)[0] == 250
    code, reply = s.data(plain(RCPT).as_bytes())
    assert code == 250, reply
    return queued_id(reply)


def rows(d: Daemon, where: str, value: str) -> list[tuple[Any, ...]]:
    """(client_ip, helo) of the messages rows whose `where` column is `value`."""
    if TEST_DATABASE == "postgresql":
        url = (d.root / ".test-database-url").read_text()
        return [tuple(r) for r in pgserver.server().fetch(
            url, f"SELECT client_ip, helo FROM messages WHERE {where} = $1", value)]
    with contextlib.closing(sqlite3.connect(d.root / "var" / "postroom.db")) as db:
        return list(db.execute(f"SELECT client_ip, helo FROM messages WHERE {where} = ?",
                               (value,)))


def stored_client(d: Daemon, message_id: str) -> tuple[Any, ...]:
    """The message's (client_ip, helo) as the ingest committed them (before the 250)."""
    [row] = rows(d, "id", message_id)
    return row


def ehlo_keywords(s: smtplib.SMTP, name: str = "relay.example") -> list[str]:
    code, text = s.ehlo(name)
    assert code == 250
    return text.decode().splitlines()[1:]


def test_ehlo_offers_xforward_to_a_trusted_peer_only(xf: Daemon) -> None:
    with client(xf) as trusted, client(xf, UNTRUSTED) as untrusted:
        assert "XFORWARD NAME ADDR PROTO HELO" in ehlo_keywords(trusted)
        offered = ehlo_keywords(untrusted)
    assert "STARTTLS" in offered  # greeted and served, as the untrusted relay AUTH is for
    assert not [k for k in offered if k.startswith("XFORWARD")], offered


def test_the_forwarded_client_is_stored_as_the_messages_client(xf: Daemon) -> None:
    with client(xf) as s:
        s.ehlo("relay.example")
        assert xforward(s, FORWARD) == "250 2.0.0"
        message_id = deliver(s)
    assert stored_client(xf, message_id) == ("203.0.113.7", "mx.example.org")
    # The trace still names the relay that spoke to us: XFORWARD changes whom SPF asks about.
    with xf.api(KEY) as api:
        link = api.post(f"/v1/messages/{message_id}/raw/download").json()
    trace = httpx.get(link["url"]).content.split(b"\r\n", 1)[0]
    assert trace.startswith(b"Received: from relay.example ([127.0.0.1])"), trace


def test_without_xforward_the_peer_and_its_ehlo_are_stored(xf: Daemon) -> None:
    with client(xf) as s:
        s.ehlo("plain.relay.example")
        message_id = deliver(s)
    assert stored_client(xf, message_id) == ("127.0.0.1", "plain.relay.example")


@pytest.mark.parametrize(("commands", "stored"), [
    # As Postfix sends them: NAME and ADDR, then PROTO and HELO; names in any case, values xtext.
    (["NAME=mx.example.org ADDR=198.51.100.4", "proto=ESMTP helo=a+2Bb"],
     ("198.51.100.4", "a+b")),
    # Postfix tags an IPv6 client's address.
    (["ADDR=IPv6:2001:DB8::7 HELO=v6.example.org"], ("2001:db8::7", "v6.example.org")),
    # ADDR=[UNAVAILABLE] erases the address given before: "a forwarded local submission", so
    # the relay is the client and its other attributes are ignored (XFORWARD_README).
    (["ADDR=198.51.100.5 HELO=far.example.org", "ADDR=[Unavailable] NAME=[TEMPUNAVAIL]"],
     ("127.0.0.1", "relay.example")),
    # An address without a HELO: none is stored, never the relay's own mixed in (note 4).
    (["ADDR=198.51.100.6"], ("198.51.100.6", None)),
], ids=["two-commands-xtext", "ipv6-tagged", "unavailable-address", "address-without-helo"])
def test_the_forwarded_attributes_make_the_stored_client(
        xf: Daemon, commands: list[str], stored: tuple[str, str | None]) -> None:
    with client(xf) as s:
        s.ehlo("relay.example")
        for command in commands:
            assert xforward(s, command) == "250 2.0.0"
        message_id = deliver(s)
    assert stored_client(xf, message_id) == stored


def test_the_forwarded_client_ends_with_the_transaction_or_an_rset(xf: Daemon) -> None:
    with client(xf) as s:
        s.ehlo("relay.example")
        assert xforward(s, "ADDR=198.51.100.1 HELO=first.example.org") == "250 2.0.0"
        first = deliver(s)
        second = deliver(s)  # the relay's own transaction now
        assert xforward(s, "ADDR=198.51.100.3") == "250 2.0.0"
        assert s.rset()[0] == 250
        after_rset = deliver(s)
        assert xforward(s, "ADDR=198.51.100.4 HELO=fourth.example.org") == "250 2.0.0"
        fourth = deliver(s)  # allowed again after DATA
    assert stored_client(xf, first) == ("198.51.100.1", "first.example.org")
    assert stored_client(xf, second) == ("127.0.0.1", "relay.example")
    assert stored_client(xf, after_rset) == ("127.0.0.1", "relay.example")
    assert stored_client(xf, fourth) == ("198.51.100.4", "fourth.example.org")


def test_refusals_change_nothing_and_leave_the_session_usable(xf: Daemon) -> None:
    with client(xf) as s:
        s.ehlo("relay.example")
        assert xforward(s, "FOO=bar") == "501 5.5.4"
        assert xforward(s, "ADDR=mx.example.org") == "501 5.5.4"
        # All or nothing: the good address before the bad attribute is not taken either.
        assert xforward(s, "ADDR=198.51.100.6 PORT=x") == "501 5.5.4"
        assert xforward(s, "ADDR") == "501 5.5.4"
        assert s.docmd("XFORWARD")[0] == 501
        assert s.mail("s@example.org")[0] == 250
        assert xforward(s, "ADDR=198.51.100.7") == "503 5.5.1"
        assert s.rcpt(RCPT)[0] == 250
        code, reply = s.data(plain(RCPT).as_bytes())
        assert code == 250, reply
        assert s.noop()[0] == 250
    assert stored_client(xf, queued_id(reply)) == ("127.0.0.1", "relay.example")


def test_an_untrusted_client_gets_550_even_when_authenticated(xf: Daemon) -> None:
    with client(xf, UNTRUSTED) as s:
        s.ehlo("relay.example")
        assert xforward(s, FORWARD) == "550 5.7.0"
        assert s.starttls(context=client_context(xf.root / "certs" / "server.crt"))[0] == 220
        s.ehlo("relay.example")
        blob = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        assert status(s.docmd("AUTH", f"PLAIN {blob}")) == "235 2.7.0"
        assert xforward(s, FORWARD) == "550 5.7.0"
        message_id = deliver(s)  # the session goes on, as the relay it is
    assert stored_client(xf, message_id) == (UNTRUSTED, "relay.example")
    refused = xf.wait_for(lambda: [e for e in xf.events("smtp.refused")
                                   if e["command"] == "XFORWARD" and e["result"] == "550"],
                          5, "the refusal logged")
    assert all(e["peer"].startswith(UNTRUSTED + ":") for e in refused), refused


def test_lmtp_offers_xforward_and_takes_it_pipelined_with_the_transaction(
        fresh_root: Path) -> None:
    with running_daemon(fresh_root, smtp='protocol = "lmtp"', extra=AGENT,
                        env={"A_KEY": KEY}) as d:
        c = Raw(d.smtp_port)
        assert c.reply().startswith(b"220")
        c.send(b"LHLO relay.example\r\n")
        offered = []
        while (line := c.line())[3:4] == b"-":
            offered.append(line[4:])
        assert b"XFORWARD NAME ADDR PROTO HELO" in offered, offered
        c.send(b"XFORWARD ADDR=192.0.2.9 HELO=lmtp.example.org\r\nMAIL FROM:<s@example.org>\r\n"
               b"RCPT TO:<" + RCPT.encode() + b">\r\nDATA\r\n")
        for expected in (b"250 2.0.0", b"250", b"250", b"354"):
            reply = c.reply()
            assert reply.startswith(expected), (expected, reply)
        c.send(plain(RCPT).as_bytes().replace(b"\n", b"\r\n") + b"\r\n.\r\n")
        message_id = queued_id(c.reply())
        c.close()
        assert stored_client(d, message_id) == ("192.0.2.9", "lmtp.example.org")


def test_postfix_in_front_forwards_the_client_it_served(xf: Daemon) -> None:
    """A private Postfix (tests/postfix.py) relays to us with smtp_send_xforward_command = yes;
    its client connects from 127.0.0.2, so the address is Postfix's client's, not Postfix's."""
    reason = ensure_installed()
    if reason is not None:
        pytest.fail(f"the Postfix test needs Postfix and root: {reason}")
    masters_before = master_pids()
    port = free_port()
    # No reverse lookup of the client: with no DNS it would only cost time (NAME is then
    # "unknown", which Postfix does not forward).
    main_cf = (smtp_relay(xf.smtp_port) + "smtp_send_xforward_command = yes\n"
               "smtpd_peername_lookup = no\n")
    sender = "via-postfix@example.org"
    with private_postfix(main_cf, listen=port) as postfix:
        with client(xf, UNTRUSTED, port) as s:
            s.ehlo("client.example.test")
            s.sendmail(sender, [RCPT], plain(RCPT, subject="through postfix").as_bytes())
        try:
            stored = xf.wait_for(lambda: rows(xf, "mail_from", sender), 30,
                                 "the message relayed by Postfix")
        except AssertionError as e:
            raise AssertionError(f"{e}\nPostfix log:\n{postfix.log_tail()}") from None
    assert stored == [(UNTRUSTED, "client.example.test")]
    assert master_pids() <= masters_before, "a Postfix master outlived the test"


# The parsing, without a socket.

def test_refusals_come_in_postfixs_order_transaction_syntax_authorization() -> None:
    def refused(in_transaction: bool, has_arguments: bool, trusted: bool) -> str | None:
        reply = command_refusal(in_transaction=in_transaction, has_arguments=has_arguments,
                                trusted=trusted)
        return None if reply is None else reply[:9]
    assert refused(in_transaction=True, has_arguments=False, trusted=False) == "503 5.5.1"
    assert refused(in_transaction=False, has_arguments=False, trusted=False) == "501 5.5.4"
    assert refused(in_transaction=False, has_arguments=True, trusted=False) == "550 5.7.0"
    assert refused(in_transaction=False, has_arguments=True, trusted=True) is None


def test_xtext_is_decoded_and_text_that_is_not_xtext_kept() -> None:
    assert decode_xtext("a+2Bb+3d") == "a+b="
    assert decode_xtext("a+b") == "a+b"  # Postfix before 2.3 sent values unencoded
    assert decode_xtext("plain") == "plain"


def test_each_command_overwrites_erases_or_keeps_attributes() -> None:
    first = updated(None, "NAME=mx.example.org ADDR=::ffff:192.0.2.1 PORT=2525 SOURCE=remote")
    assert first == Forwarded(name="mx.example.org", addr="192.0.2.1", port="2525",
                              source="REMOTE")
    second = updated(first, "NAME=[UNAVAILABLE] HELO=bad<helo>\x01 IDENT=ABC123")
    assert second == Forwarded(addr="192.0.2.1", port="2525", source="REMOTE",
                               helo="bad?helo??", ident="ABC123")


@pytest.mark.parametrize("arg", [
    "", "NAME", "NAME=", "COLOR=blue", "ADDR=IPv6:192.0.2.1", "ADDR=fe80::1%eth0",
    "ADDR=192.0.2.300", "PORT=65536", "SOURCE=elsewhere", "PROTO=" + "X" * 65,
    "HELO=" + "h" * 256,
])
def test_a_faulty_command_is_refused_with_501(arg: str) -> None:
    with pytest.raises(XforwardError) as refused:
        updated(Forwarded(addr="192.0.2.1"), arg)
    assert refused.value.reply.startswith("501 5.5.4 ")
