"""Nothing accepted is lost: kill -9 after a burst of 250s, store failures answer 451, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import struct
import time
from pathlib import Path

import aiosmtplib

from tests.harness import (
    Raw,
    queued_id,
    running_daemon,
    start_daemon,
    start_demo_daemon,
    write_config,
)
from tests.mail import plain, with_attachment


async def _burst(port: int, rcpt: str, count: int, concurrency: int) -> list[str]:
    """Send `count` distinct messages over `concurrency` connections; return the queued ids."""
    ids: list[str] = []

    async def worker(n: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await client.connect()
        try:
            for i in range(n):
                payload = f"payload {i} {n}".encode() * 500
                msg = with_attachment(rcpt, payload, file_name=f"f{i}.bin",
                                      content_type="application/octet-stream")
                errors, reply = await client.send_message(msg, sender="s@example.org",
                                                          recipients=[rcpt])
                assert not errors
                ids.append(queued_id(reply))
        finally:
            await client.quit()

    per = count // concurrency
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    return ids


def _statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, status FROM messages").fetchall())


def test_kill_9_after_a_burst_loses_nothing(fresh_root: Path) -> None:
    fresh_root.mkdir(parents=True)
    # One worker and a one-slot queue: most accepted messages are still unextracted at the kill.
    slow = write_config(fresh_root, pipeline="workers = 1\nqueue_size = 1")
    first = start_daemon(fresh_root, slow)
    agent = first.add_agent("a", "a@t.test")
    ids = asyncio.run(_burst(first.smtp_port, "a@t.test", 60, 6))
    first.proc.send_signal(signal.SIGKILL)  # straight after the last 250, work in flight
    first.proc.wait()
    first.close_pipes()
    before = _statuses(fresh_root / "var" / "postroom.db")
    assert set(ids) <= set(before), "a 250 was given for a message with no committed row"
    unfinished = sum(1 for s in before.values() if s != "ready")
    assert unfinished >= 10, f"only {unfinished} unfinished: the test would not test recovery"
    second = start_daemon(fresh_root, write_config(fresh_root))
    try:
        for msg_id in ids:
            message = second.wait_message(agent["api_key"], msg_id, timeout=60)
            assert message["status"] == "ready", message
            assert message["attachments"][0]["status"] == "ready"
        after = _statuses(fresh_root / "var" / "postroom.db")
        assert len(after) == len(set(ids))
    finally:
        assert second.stop() == 0


def test_store_failure_answers_451_and_service_resumes(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        agent = d.add_agent("a", "a@t.test")
        raw_dir = fresh_root / "var" / "objects" / "raw"
        raw_dir.mkdir(parents=True, exist_ok=True)
        for f in raw_dir.iterdir():
            f.unlink()
        raw_dir.rmdir()
        raw_dir.write_bytes(b"")  # a file where the directory should be: every raw put fails
        code, text = d.try_send(plain("a@t.test").as_bytes(), "a@t.test")
        assert (code, text[:5]) == (451, b"4.3.0")
        assert d.message_ids(agent["api_key"]) == []
        raw_dir.unlink()
        msg_id = d.send(plain("a@t.test"), ["a@t.test"])
        assert d.wait_message(agent["api_key"], msg_id)["status"] == "ready"
        failed = d.wait_for(lambda: [e for e in d.events("smtp.transaction")
                                     if e["result"] == "451"], 10, "the 451 logged")
        assert failed and failed[0]["message_id"] is None


def test_database_failure_answers_451(fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra='[database]\nbusy_timeout = "0.5s"') as d:
        d.add_agent("a", "a@t.test")
        db = sqlite3.connect(fresh_root / "var" / "postroom.db", timeout=0.1)
        db.execute("BEGIN EXCLUSIVE")  # hold the write lock past the daemon's busy timeout
        try:
            code, text = d.try_send(plain("a@t.test").as_bytes(), "a@t.test")
            assert (code, text[:5]) == (451, b"4.3.0")
        finally:
            db.rollback()
            db.close()
        leftover = list((fresh_root / "var" / "objects" / "raw").glob("*.eml"))
        assert leftover == [], "a refused message left its raw object behind"
        d.send(plain("a@t.test"), ["a@t.test"])


def test_sigterm_exits_zero_and_logs_the_stop(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        d.add_agent("a", "a@t.test")
        d.send(plain("a@t.test"), ["a@t.test"])
    assert d.proc.returncode == 0
    assert d.events("daemon.stopped")[0]["status"] == 0


def test_demo_agent_of_config_toml_is_created_and_printed_once(fresh_root: Path) -> None:
    d, key = start_demo_daemon(fresh_root)
    try:
        assert key is not None and "demo@postroom.localhost" in "\n".join(d.stderr)
        msg_id = d.send(plain("demo@postroom.localhost"), ["demo@postroom.localhost"])
        assert d.wait_message(key, msg_id)["status"] == "ready"
        assert key not in json.dumps(d.logs)
    finally:
        assert d.stop() == 0
    again, again_key = start_demo_daemon(fresh_root)
    try:
        assert again_key is None, "the key must be printed only when the agent is created"
    finally:
        assert again.stop() == 0


def test_client_hanging_up_after_the_final_dot_loses_nothing(fresh_root: Path) -> None:
    """A relay that drops the connection before reading the reply retries; every retry must end
    in a ready message (never a committed row without its raw object, or the reverse)."""
    with running_daemon(fresh_root) as d:
        agent = d.add_agent("a", "a@t.test")
        bodies = [plain("a@t.test").as_bytes().replace(b"\n", b"\r\n") for _ in range(60)]
        for i, body in enumerate(bodies):
            c = Raw.in_data(d.smtp_port, "a@t.test")
            c.send(body + b".\r\n")
            time.sleep(0.002 * (i % 8))  # hang up at different moments of the store
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()  # RST: the reply is never read
        retried = [d.send(body, ["a@t.test"]) for body in bodies]
        for msg_id in retried:
            assert d.wait_message(agent["api_key"], msg_id)["status"] == "ready"
        rows = _statuses(fresh_root / "var" / "postroom.db")
        assert all(s == "ready" for s in rows.values()), rows
        assert len(rows) == len(bodies)
        raws = {p.stem for p in (fresh_root / "var" / "objects" / "raw").glob("*.eml")}
        assert raws == set(rows), "raw objects and rows must match one to one"
        d.wait_for(lambda: [e for e in d.events("smtp.transaction") if e["result"] == "aborted"],
                   10, "the aborted transaction logged")


def test_a_message_that_keeps_killing_extraction_is_failed_not_retried_forever(
        fresh_root: Path) -> None:
    with running_daemon(fresh_root, pipeline="max_attempts = 2") as d:
        agent = d.add_agent("a", "a@t.test")
        msg_id = d.send(plain("a@t.test"), ["a@t.test"])
        d.wait_message(agent["api_key"], msg_id)
    with sqlite3.connect(fresh_root / "var" / "postroom.db") as db:
        # As if two processes had died mid-extraction: claimed twice, never finished.
        db.execute("UPDATE messages SET status = 'processing', attempts = 2, lease_owner = 'gone',"
                   " lease_expires_at = NULL WHERE id = ?", (msg_id,))
    with running_daemon(fresh_root, pipeline="max_attempts = 2") as d:
        m = d.wait_message(agent["api_key"], msg_id)
        assert m["status"] == "failed"
        assert "never finished" in m["error"]


def test_no_child_process_outlives_a_killed_daemon(fresh_root: Path) -> None:
    fresh_root.mkdir(parents=True)
    d = start_daemon(fresh_root, write_config(fresh_root))
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.close_pipes()  # raises if an extraction worker still holds the daemon's stdout
