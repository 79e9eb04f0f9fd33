"""Large messages through a real daemon: spooled to a file while they arrive, moved into the
store, extracted by the worker from the file; the daemon's own memory stays flat."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import httpx

from tests.harness import Daemon, Raw, running_daemon


def _message(to: str, payload: bytes, dotted_lines: int = 2000) -> bytes:
    """A multipart message with CRLF endings, a text part full of lines starting with a dot,
    and one base64 attachment."""
    text = b"".join(b".line %d starts with a dot\r\n..and this with two\r\n" % i
                    for i in range(dotted_lines))
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (b"From: sender@example.org\r\nTo: " + to.encode() + b"\r\nSubject: big\r\n"
            b"Message-ID: <" + os.urandom(8).hex().encode() + b"@example.org>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BOUND\r\n\r\n"
            b"--BOUND\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + text +
            b"--BOUND\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=blob.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--BOUND--\r\n")


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _download(d: Daemon, key: str, path: str) -> tuple[bytes, dict[str, object]]:
    with d.api(key) as api:
        r = api.post(path)
        assert r.status_code == 200, r.text
        meta = r.json()
    got = httpx.get(meta["url"], timeout=30)
    assert got.status_code == 200
    return got.content, meta


def test_a_large_message_is_spooled_and_stored_exactly(fresh_root: Path) -> None:
    with running_daemon(fresh_root, smtp='spool_threshold = "64k"') as d:
        agent = d.add_agent("a", "a@t.test")
        payload = os.urandom(3 * 1024 * 1024)
        raw = _message("a@t.test", payload)
        message_id = d.send(raw, ["a@t.test"])
        msg = d.wait_message(agent["api_key"], message_id)
        assert msg["status"] == "ready", msg
        stored, meta = _download(d, agent["api_key"],
                                 f"/v1/messages/{message_id}/attachments/0/download")
        assert stored == payload
        assert meta["sha256"] == hashlib.sha256(payload).hexdigest()
        whole, meta = _download(d, agent["api_key"], f"/v1/messages/{message_id}/raw/download")
        # Exactly the bytes sent (dot-unstuffed), after our Received header.
        assert whole.startswith(b"Received: ")
        assert whole.endswith(b"\r\n" + raw) and whole.count(b"\r\nFrom: sender@") == 1
        assert meta["sha256"] == hashlib.sha256(whole).hexdigest()
        assert meta["size"] == len(whole)
        spool = fresh_root / "var" / "objects" / ".spool"
        assert list(spool.iterdir()) == []


def test_the_text_body_is_unstuffed(fresh_root: Path) -> None:
    with running_daemon(fresh_root, smtp='spool_threshold = "1k"') as d:
        agent = d.add_agent("a", "a@t.test")
        message_id = d.send(_message("a@t.test", b"x" * 10, dotted_lines=300), ["a@t.test"])
        msg = d.wait_message(agent["api_key"], message_id)
        with d.api(agent["api_key"]) as api:
            full = api.get(f"/v1/messages/{message_id}").json()
    assert msg["status"] == "ready"
    lines = full["text"].splitlines()
    assert lines[:4] == [".line 0 starts with a dot", "..and this with two",
                         ".line 1 starts with a dot", "..and this with two"]
    assert len(lines) == 600


def test_refused_and_aborted_transfers_leave_no_spool_files(fresh_root: Path) -> None:
    with running_daemon(fresh_root, smtp='max_message_size = "1MB"\nspool_threshold = "16k"') \
            as d:
        d.add_agent("a", "a@t.test")
        code, _ = d.try_send(_message("a@t.test", os.urandom(2 * 1024 * 1024)), "a@t.test")
        assert code == 552
        c = Raw.in_data(d.smtp_port, "a@t.test")
        c.send(b"Subject: cut\r\n\r\n" + b"x" * 300_000)
        d.wait_for(lambda: (fresh_root / "var" / "objects" / ".spool").exists() and list(
            (fresh_root / "var" / "objects" / ".spool").iterdir()), 10, "a spool file")
        c.close()
        d.wait_for(lambda: [e for e in d.events("smtp.transaction")
                            if e["result"] == "aborted"], 10, "the aborted transaction")
        spool = fresh_root / "var" / "objects" / ".spool"
        d.wait_for(lambda: list(spool.iterdir()) == [], 5, "the spool to empty")
        assert list((fresh_root / "var" / "objects" / "raw").iterdir()) == []
        assert d.rcpt_code("a@t.test") == 250


def test_stale_spool_files_are_removed_at_start(fresh_root: Path) -> None:
    spool = fresh_root / "var" / "objects" / ".spool"
    spool.mkdir(parents=True)
    # A pid that no longer runs: a process that has exited and been reaped.
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (spool / f"spool-{dead}-0123abcd").write_bytes(b"x" * 1000)
    with running_daemon(fresh_root) as d:
        assert list(spool.iterdir()) == []
        assert [e for e in d.events("daemon.spool_cleared") if e["files"] == 1]


def test_the_daemon_does_not_hold_a_large_message_in_memory(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        agent = d.add_agent("a", "a@t.test")
        d.send(_message("a@t.test", os.urandom(64 * 1024), dotted_lines=10), ["a@t.test"])
        before = _vm_hwm_kib(d.proc.pid)
        payload = os.urandom(30 * 1024 * 1024)  # 41 MB on the wire, base64
        message_id = d.send(_message("a@t.test", payload, dotted_lines=10), ["a@t.test"])
        msg = d.wait_message(agent["api_key"], message_id, timeout=60)
        assert msg["status"] == "ready"
        assert msg["attachments"][0]["sha256"] == hashlib.sha256(payload).hexdigest()
        grown_mib = (_vm_hwm_kib(d.proc.pid) - before) / 1024
    # Before spooling the daemon held the message two or three times over (> 80 MiB).
    assert grown_mib < 24, f"peak RSS of the daemon grew by {grown_mib:.1f} MiB"
