"""SMTP policy and framing through a real socket: replies, limits, long lines, timers, dedupe."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Daemon, Raw, queued_id, running_daemon
from tests.mail import plain


def test_ehlo_advertises_the_extensions(daemon: Daemon) -> None:
    with daemon.smtp() as s:
        code, text = s.ehlo("client.example")
    assert code == 250
    lines = text.decode().splitlines()
    for ext in ["SIZE 52428800", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES"]:
        assert ext in lines, lines


def test_unknown_recipient_is_rejected_at_rcpt(daemon: Daemon, alice: dict[str, Any]) -> None:
    with daemon.smtp() as s:
        s.ehlo("client.example")
        s.mail("sender@example.org")
        code, text = s.rcpt("nobody@agents.test")
        assert (code, text[:5]) == (550, b"5.1.1")
        assert s.rcpt("alice@agents.test")[0] == 250
    refused = daemon.wait_for(lambda: [e for e in daemon.events("smtp.refused")
                                       if e["result"] == "550"], 5, "refusal logged")
    assert refused[0]["command"] == "RCPT" and "nobody" not in str(refused)


def test_declared_size_over_the_limit_is_refused(daemon: Daemon, alice: dict[str, Any]) -> None:
    with daemon.smtp() as s:
        s.ehlo("client.example")
        code, text = s.mail("sender@example.org", options=[f"SIZE={60 * 1024 * 1024}"])
    assert (code, text[:5]) == (552, b"5.3.4")


def test_data_over_the_limit_is_refused_and_nothing_kept(fresh_root: Path) -> None:
    with running_daemon(fresh_root, smtp='max_message_size = "100kB"') as d:
        agent = d.add_agent("a", "a@t.test")
        big = plain("a@t.test", text="x" * 200_000).as_bytes()
        with d.smtp() as s:
            s.ehlo("client.example")
            s.mail("sender@example.org")
            s.rcpt("a@t.test")
            code, text = s.data(big)
            assert (code, text[:5]) == (552, b"5.3.4")
            # The connection stays usable for the next, smaller message.
            s.mail("sender@example.org")
            s.rcpt("a@t.test")
            code, text = s.data(plain("a@t.test").as_bytes())
            assert code == 250
        with d.api(agent["api_key"]) as api:
            assert len(api.get("/v1/messages").json()["messages"]) == 1
        assert len(list((fresh_root / "var" / "objects" / "raw").iterdir())) == 1


def test_too_many_recipients_get_452(fresh_root: Path) -> None:
    with running_daemon(fresh_root, smtp="max_recipients = 2") as d:
        d.add_agent("a", "*@t.test")
        with d.smtp() as s:
            s.ehlo("client.example")
            s.mail("sender@example.org")
            assert s.rcpt("1@t.test")[0] == 250
            assert s.rcpt("2@t.test")[0] == 250
            code, text = s.rcpt("3@t.test")
            assert (code, text[:5]) == (452, b"4.5.3")
            code, _ = s.data(plain("1@t.test").as_bytes())
            assert code == 250


def test_client_outside_trusted_networks_is_refused(fresh_root: Path) -> None:
    with running_daemon(fresh_root, smtp='trusted_networks = ["192.0.2.0/24"]') as d:
        c = Raw(d.smtp_port)
        assert c.reply().startswith(b"554 5.7.1")
        c.close()


def test_long_lines_in_data_are_accepted(daemon: Daemon, alice: dict[str, Any]) -> None:
    line = b"y" * 300_000
    body = (b"From: s@example.org\r\nTo: alice@agents.test\r\nSubject: long\r\n\r\n" + line
            + b"\r\n")
    msg_id = daemon.send(body, ["alice@agents.test"])
    message = daemon.wait_message(alice["api_key"], msg_id)
    assert message["status"] == "ready"
    assert message["body"]["text"]["size"] >= 300_000


def test_dot_stuffing_and_pipelined_commands_after_data(daemon: Daemon,
                                                        alice: dict[str, Any]) -> None:
    c = Raw(daemon.smtp_port)
    assert c.reply().startswith(b"220")
    c.send(b"EHLO client.example\r\n")
    assert c.reply().startswith(b"250")
    body = (b"Subject: dots\r\n\r\n..leading dot\r\n.\r\n")  # the client stuffed ".leading dot"
    # Everything pipelined: two transactions and QUIT in one write.
    c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@agents.test>\r\nDATA\r\n")
    assert c.reply().startswith(b"250")
    assert c.reply().startswith(b"250")
    assert c.reply().startswith(b"354")
    c.send(body + b"MAIL FROM:<>\r\nRCPT TO:<alice@agents.test>\r\nDATA\r\n")
    first = c.reply()
    assert first.startswith(b"250 2.0.0"), first
    assert c.reply().startswith(b"250")
    assert c.reply().startswith(b"250")
    assert c.reply().startswith(b"354")
    c.send(b"Subject: second\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    second = c.reply()
    assert second.startswith(b"250 2.0.0")
    assert c.reply().startswith(b"221")
    c.close()
    m = daemon.wait_message(alice["api_key"], queued_id(first))
    assert m["text"].startswith(".leading dot")
    second_msg = daemon.wait_message(alice["api_key"], queued_id(second))
    assert second_msg["mail_from"] == ""


def test_slow_but_moving_data_is_not_cut_off_by_the_idle_timer(fresh_root: Path) -> None:
    with running_daemon(fresh_root, smtp='timeout = "1s"') as d:
        d.add_agent("a", "a@t.test")
        c = Raw.in_data(d.smtp_port, "a@t.test")
        c.send(b"Subject: slow\r\n\r\n")
        for _ in range(4):  # 2 s of DATA, a chunk every 0.5 s, each gap under the 1 s timer
            time.sleep(0.5)  # the client's pace, not a wait for the daemon
            c.send(b"z" * 10_000 + b"\r\n")
        c.send(b".\r\n")
        assert c.reply().startswith(b"250 2.0.0")
        c.close()


def test_an_idle_connection_gets_421_and_is_closed_after_the_timeout(fresh_root: Path) -> None:
    with running_daemon(fresh_root, smtp='timeout = "1s"') as d:
        c = Raw(d.smtp_port)
        assert c.reply().startswith(b"220")
        c.send(b"NOOP\r\n")
        assert c.reply().startswith(b"250")  # served until it falls silent
        assert c.reply().startswith(b"421 4.4.2")
        with pytest.raises(ConnectionError):
            c.line()
        c.close()


def test_identical_redelivery_gets_the_same_id_and_creates_nothing(
        daemon: Daemon, alice: dict[str, Any], bob: dict[str, Any]) -> None:
    data = plain("alice@agents.test").as_bytes()
    first = daemon.send(data, ["alice@agents.test"])
    again = daemon.send(data, ["alice@agents.test"])
    assert again == first
    other = daemon.send(data, ["alice@agents.test", "bob@agents.test"])
    assert other != first  # different envelope recipients: a different delivery
    assert daemon.message_ids(alice["api_key"]).count(first) == 1


def test_null_sender_is_accepted(daemon: Daemon, alice: dict[str, Any]) -> None:
    msg_id = daemon.send(plain("alice@agents.test"), ["alice@agents.test"], sender="<>")
    assert daemon.wait_message(alice["api_key"], msg_id)["mail_from"] == ""


def test_connections_beyond_the_limit_get_421_and_a_freed_slot_serves_again(
        fresh_root: Path) -> None:
    with running_daemon(fresh_root, smtp="max_connections = 2") as d:
        held = [Raw(d.smtp_port), Raw(d.smtp_port)]
        for c in held:
            assert c.reply().startswith(b"220")
        extra = Raw(d.smtp_port)
        assert extra.reply().startswith(b"421 4.7.0")
        extra.close()
        held.pop().close()

        def served() -> bool:
            c = Raw(d.smtp_port)
            try:
                return c.reply().startswith(b"220")
            finally:
                c.close()
        d.wait_for(served, 5, "a freed connection slot")
        for c in held:
            c.close()


def test_rset_abandons_the_transaction(daemon: Daemon, alice: dict[str, Any]) -> None:
    before = daemon.message_ids(alice["api_key"])
    with daemon.smtp() as s:
        s.ehlo("client.example")
        s.mail("s@example.org")
        s.rcpt("alice@agents.test")
        assert s.rset()[0] == 250
        assert s.docmd("DATA")[0] == 503  # no envelope any more
        s.mail("s@example.org")
        s.rcpt("alice@agents.test")
        assert s.data(plain("alice@agents.test").as_bytes())[0] == 250
    assert len(daemon.message_ids(alice["api_key"])) == len(before) + 1


def test_bare_lf_nul_and_8bit_bytes_are_kept_exactly(daemon: Daemon,
                                                     alice: dict[str, Any]) -> None:
    body = (b"From: s@example.org\nTo: alice@agents.test\nSubject: caf\xc3\xa9 \xff\n\n"
            b"line one\nNUL here:\x00 and 8-bit \xe9\n.\nnot the end (bare LF dot)\n")
    c = Raw.in_data(daemon.smtp_port, "alice@agents.test")
    # SMTP lines end in CRLF only: a dot after a bare LF is content (never stuffed, never an end).
    c.send(body + b"\r\n.\r\n")
    reply = c.reply()
    assert reply.startswith(b"250 2.0.0"), reply
    c.close()
    msg_id = queued_id(reply)
    message = daemon.wait_message(alice["api_key"], msg_id)
    assert message["status"] in ("ready", "partial")
    with daemon.api(alice["api_key"]) as api:
        link = api.post(f"/v1/messages/{msg_id}/raw/download").json()
    raw = httpx.get(link["url"]).content
    assert raw.endswith(body + b"\r\n"), raw[-120:]


def test_disconnect_mid_data_keeps_nothing(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        agent = d.add_agent("a", "a@t.test")
        c = Raw.in_data(d.smtp_port, "a@t.test")
        c.send(b"Subject: cut\r\n\r\n" + b"x" * 50_000)
        c.close()
        d.wait_for(lambda: [e for e in d.events("smtp.transaction")
                            if e["result"] == "aborted"], 5, "the aborted transaction")
        assert d.message_ids(agent["api_key"]) == []
        assert list((fresh_root / "var" / "objects" / "raw").glob("*")) == []
        assert d.rcpt_code("a@t.test") == 250  # and the daemon serves the next client


def test_the_received_header_names_the_client_the_protocol_and_the_message(
        daemon: Daemon, alice: dict[str, Any]) -> None:
    msg_id = daemon.send(plain("alice@agents.test"), ["alice@agents.test"])
    with daemon.api(alice["api_key"]) as api:
        link = api.post(f"/v1/messages/{msg_id}/raw/download").json()
    raw = httpx.get(link["url"]).content
    trace = raw[:raw.index(b"\r\n", raw.index(b"; ")) + 2].decode()
    assert trace.startswith("Received: from client.example ([127.0.0.1])\r\n"
                            f"\tby mx.test.example (postroom) with ESMTP id {msg_id}\r\n"
                            "\tfor <alice@agents.test>; "), trace
