"""LMTP (RFC 2033) through the real daemon: LHLO only, and one reply per accepted recipient after
DATA, in RCPT order, whatever the outcome (250, 552, or 451 when our store fails)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Daemon, Raw, queued_id, running_daemon
from tests.mail import plain

KEYS = {"a": "pr_lmtp_test_key_a_0123456789abcdef", "b": "pr_lmtp_test_key_b_0123456789abcdef"}
AGENTS = "".join(f'[[agents]]\nname = "{n}"\naddresses = ["{n}@t.test"]\napi_key_env = "K_{n}"\n'
                 for n in KEYS)


@pytest.fixture(scope="module")
def lmtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    env = {f"K_{n}": key for n, key in KEYS.items()}
    with running_daemon(tmp_path_factory.mktemp("lmtp"),
                        smtp='protocol = "lmtp"\nmax_message_size = "100kB"', extra=AGENTS,
                        env=env) as d:
        yield d


def envelope(d: Daemon) -> Raw:
    """A connection after LHLO, MAIL and RCPT to a, an unknown address, then b; DATA sent."""
    c = Raw(d.smtp_port)
    assert c.reply().startswith(b"220")
    c.send(b"LHLO client.example\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<a@t.test>\r\n"
           b"RCPT TO:<nobody@t.test>\r\nRCPT TO:<b@t.test>\r\nDATA\r\n")
    for expected in (b"250", b"250", b"250", b"550 5.1.1", b"250", b"354"):
        reply = c.reply()
        assert reply.startswith(expected), (expected, reply)
    return c


def after_data(c: Raw, message: bytes) -> list[bytes]:
    """Send the message and the end marker, then NOOP; the replies before the NOOP's."""
    c.send(message + b"\r\n.\r\nNOOP\r\n")
    replies = []
    while (reply := c.reply()) != b"250 OK":
        replies.append(reply)
    c.close()
    return replies


def test_lhlo_replaces_helo_and_ehlo(lmtp: Daemon) -> None:
    with smtplib.SMTP("127.0.0.1", lmtp.smtp_port, timeout=30) as s:
        assert s.ehlo("client.example")[0] == 500
        assert s.helo("client.example")[0] == 500
    with smtplib.LMTP("127.0.0.1", lmtp.smtp_port, timeout=30) as s:
        code, text = s.ehlo("client.example")  # smtplib's LMTP sends LHLO
        lines = text.decode().splitlines()
    assert code == 250
    for ext in ("SIZE 100000", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"):
        assert ext in lines


def test_data_gets_one_reply_per_accepted_recipient_in_rcpt_order(lmtp: Daemon) -> None:
    replies = after_data(envelope(lmtp), plain("a@t.test").as_bytes().replace(b"\n", b"\r\n"))
    assert len(replies) == 2, replies
    assert all(r.startswith(b"250 2.0.0 Ok: queued as ") for r in replies)
    msg_id = queued_id(replies[0])
    assert queued_id(replies[1]) == msg_id  # one stored message serves both recipients
    for name, key in KEYS.items():
        assert lmtp.wait_message(key, msg_id)["status"] == "ready", name
    with lmtp.api(KEYS["b"]) as api:
        link = api.post(f"/v1/messages/{msg_id}/raw/download").json()
    trace = httpx.get(link["url"]).content.split(b"\r\n\r\n", 1)[0]
    assert b"from client.example ([127.0.0.1])" in trace and b"with LMTP id" in trace


def test_a_message_over_the_limit_gets_552_for_each_recipient(lmtp: Daemon) -> None:
    replies = after_data(envelope(lmtp), b"Subject: big\r\n\r\n" + b"x" * 200_000)
    assert [r[:9] for r in replies] == [b"552 5.3.4"] * 2


def test_a_store_failure_gets_451_for_each_recipient(lmtp: Daemon) -> None:
    raw_dir = lmtp.root / "var" / "objects" / "raw"
    moved = raw_dir.with_name("raw.away")
    raw_dir.mkdir(parents=True, exist_ok=True)
    raw_dir.rename(moved)
    raw_dir.write_bytes(b"")  # a file where the directory should be: every raw put fails
    try:
        replies = after_data(envelope(lmtp), b"Subject: later\r\n\r\nretry me\r\n")
    finally:
        raw_dir.unlink()
        Path(moved).rename(raw_dir)
    assert [r[:9] for r in replies] == [b"451 4.3.0"] * 2
    replies = after_data(envelope(lmtp), b"Subject: later\r\n\r\nretry me\r\n")
    assert [r[:9] for r in replies] == [b"250 2.0.0"] * 2
