"""Backpressure through the real daemon: while extraction is stuck, the reply to MAIL waits, and
comes (250, never a refusal) while extraction is still stuck, so the wait is bounded; once
extraction moves again, a waiting MAIL is answered and the held message becomes ready. Also: the
SMTP listener keeps the backlog it was given.

The exact rule (how long, who goes at which finish) is tests/pipeline/test_backpressure_rule.py's,
on a clock the test drives; here the daemon runs on the real one, so what is asserted is the
order of what a relay sees, never how long it took.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

from tests.harness import Daemon, Raw, process_tree, running_daemon
from tests.mail import plain

MAX_LAG = 0.8  # the wait is 3 × this: far longer than the test needs to look at a reply


def _extraction_workers(pid: int) -> list[int]:
    out = []
    for child in process_tree(pid)[1:]:
        try:
            if b"extract_worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
        except OSError:
            continue
    return out


def _mail_sent(d: Daemon) -> Raw:
    """A connection that has said EHLO and MAIL, its reply to MAIL not read yet."""
    c = Raw(d.smtp_port)
    assert c.reply().startswith(b"220")
    c.send(b"EHLO relay.example\r\n")
    assert c.reply().startswith(b"250")
    c.send(b"MAIL FROM:<s@example.org>\r\n")
    return c


def _answered(c: Raw) -> bool:
    """Whether the reply to MAIL has arrived (without waiting for it)."""
    return bool(c.buf) or bool(select.select([c.sock], [], [], 0)[0])


def _pending(d: Daemon, key: str, message_id: str) -> bool:
    with d.api(key) as api:
        return str(api.get(f"/v1/messages/{message_id}").json()["status"]) in (
            "received", "processing")


def _waited(d: Daemon, key: str, message_id: str) -> float:
    """Seconds since the daemon received `message_id` (its `received_at`)."""
    with d.api(key) as api:
        received = datetime.fromisoformat(api.get(f"/v1/messages/{message_id}").json()[
            "received_at"])
    return time.time() - received.timestamp()


def test_mail_waits_boundedly_while_extraction_is_stuck(fresh_root: Path) -> None:
    with running_daemon(fresh_root, pipeline=f'max_lag = "{MAX_LAG}s"') as d:
        key = d.add_agent("bp", "bp@agents.test")["api_key"]
        (worker,) = _extraction_workers(d.proc.pid)
        os.kill(worker, signal.SIGSTOP)  # extraction stops dead; ingest does not need it
        try:
            held = d.send(plain("bp@agents.test"), ["bp@agents.test"])
            # Once the held message is older than max_lag, every MAIL waits.
            d.wait_for(lambda: _waited(d, key, held) > MAX_LAG + 0.2, 10, "the lag to grow")
            bounded = _mail_sent(d)
            # A round trip through the daemon after the MAIL, which an unpaced MAIL's reply
            # would have beaten: the reply is not there.
            assert _pending(d, key, held)
            assert not _answered(bounded)  # waiting …
            assert bounded.reply().startswith(b"250")  # … then let go, never refused,
            assert _pending(d, key, held)  # while extraction is still stuck: by the bound
            bounded.close()

            caught_up = _mail_sent(d)
            assert _pending(d, key, held)
            assert not _answered(caught_up)
        finally:
            os.kill(worker, signal.SIGCONT)
        assert d.wait_message(key, held)["status"] == "ready"
        assert caught_up.reply().startswith(b"250")  # extraction moves: MAIL goes on
        caught_up.close()


def test_the_smtp_listener_keeps_a_backlog_of_1024(fresh_root: Path) -> None:
    """create_server listens again with its own default (100) unless told otherwise."""
    with running_daemon(fresh_root) as d:
        out = subprocess.run(["ss", "-ltnH", f"sport = :{d.smtp_port}"], capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[0] == "LISTEN" and out[2] == "1024", out  # Send-Q of a listener: backlog
