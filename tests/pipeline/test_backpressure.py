"""Backpressure through the real daemon: while extraction is stuck, the reply to MAIL waits
3 × `pipeline.max_lag` and no longer; once extraction moves again, MAIL is answered at once and
the held message becomes ready. Also: the SMTP listener keeps the backlog it was given."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.harness import Daemon, process_tree, running_daemon
from tests.mail import plain

MAX_LAG = 0.4


def _extraction_workers(pid: int) -> list[int]:
    out = []
    for child in process_tree(pid)[1:]:
        try:
            if b"extract_worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
        except OSError:
            continue
    return out


def _mail_seconds(d: Daemon) -> float:
    with d.smtp() as s:
        s.ehlo("relay.example")
        started = time.monotonic()
        code, _ = s.mail("s@example.org")
        took = time.monotonic() - started
        assert code == 250
    return took


def test_mail_waits_boundedly_while_extraction_is_stuck(fresh_root: Path) -> None:
    with running_daemon(fresh_root, pipeline=f'max_lag = "{MAX_LAG}s"') as d:
        key = d.add_agent("bp", "bp@agents.test")["api_key"]
        assert _mail_seconds(d) < MAX_LAG  # nothing behind: no wait
        (worker,) = _extraction_workers(d.proc.pid)
        os.kill(worker, signal.SIGSTOP)  # extraction stops dead; ingest does not need it
        try:
            held = d.send(plain("bp@agents.test"), ["bp@agents.test"])
            d.wait_for(lambda: _mail_seconds(d) > 2 * MAX_LAG, 10, "MAIL to be paced")
            waited = _mail_seconds(d)
            assert 3 * MAX_LAG - 0.05 <= waited < 3 * MAX_LAG + 1.0, waited
        finally:
            os.kill(worker, signal.SIGCONT)
        assert d.wait_message(key, held)["status"] == "ready"
        assert _mail_seconds(d) < MAX_LAG  # caught up: answered at once again


def test_the_smtp_listener_keeps_a_backlog_of_1024(fresh_root: Path) -> None:
    """create_server listens again with its own default (100) unless told otherwise."""
    with running_daemon(fresh_root) as d:
        out = subprocess.run(["ss", "-ltnH", f"sport = :{d.smtp_port}"], capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[0] == "LISTEN" and out[2] == "1024", out  # Send-Q of a listener: backlog
