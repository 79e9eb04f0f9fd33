"""The event feed through a real daemon: order, cursors, long polls, isolation, restarts."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.harness import Daemon, running_daemon, start_daemon, write_config
from tests.mail import plain, with_attachment


def _events(d: Daemon, key: str, after: str | None = None, **params: Any) -> dict[str, Any]:
    with d.api(key) as api:
        r = api.get("/v1/events", params={**({"after": after} if after else {}), **params},
                    timeout=40)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _all_events(d: Daemon, key: str, until: int, timeout: float = 20) -> list[dict[str, Any]]:
    """Every event so far, read in pages until at least `until` are there."""
    got: list[dict[str, Any]] = []
    cursor = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = _events(d, key, cursor, limit=2, wait=1)
        got += page["events"]
        cursor = page["next_cursor"]
        if len(got) >= until and not page["has_more"]:
            return got
    raise AssertionError(f"only {len(got)} events: {got}")


def test_changes_arrive_in_order_with_cursors(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        alice = d.add_agent("alice", "alice@t.test")
        bob = d.add_agent("bob", "bob@t.test")
        msg_id = d.send(with_attachment("alice@t.test", b"%PDF-1.4\n" + b"x" * 5000),
                        ["alice@t.test"])
        d.wait_message(alice["api_key"], msg_id)
        events = _all_events(d, alice["api_key"], 3)
        assert [(e["type"], e["message_id"], e["index"]) for e in events] == [
            ("message.received", msg_id, None), ("attachment.ready", msg_id, 0),
            ("message.ready", msg_id, None)]
        assert events[1]["attachment_id"].startswith("att_")
        cursors = [int(e["cursor"]) for e in events]
        assert cursors == sorted(cursors) and len(set(cursors)) == 3
        # Each has a stable id (SPEC §14) beside its cursor, ordered as the feed is.
        ids = [e["id"] for e in events]
        assert all(i.startswith("evt_") for i in ids) and ids == sorted(set(ids))
        # Nothing after the last cursor; the cursor stays where it was.
        tail = _events(d, alice["api_key"], events[-1]["cursor"])
        assert tail == {"events": [], "next_cursor": events[-1]["cursor"], "has_more": False}
        # Another agent sees none of it.
        assert _events(d, bob["api_key"])["events"] == []


def test_a_long_poll_returns_as_soon_as_something_happens(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        alice = d.add_agent("alice", "alice@t.test")
        answer: dict[str, Any] = {}

        def poll() -> None:
            answer["body"] = _events(d, alice["api_key"], wait=20)

        poller = threading.Thread(target=poll)
        poller.start()
        poller.join(0.5)
        assert poller.is_alive()  # nothing yet: the request is held
        msg_id = d.send(plain("alice@t.test"), ["alice@t.test"])
        poller.join(10)  # well before the 20 s the poll asked to wait
        assert not poller.is_alive(), "the long poll was not answered when the mail came"
        assert answer["body"]["events"][0]["type"] == "message.received"
        assert answer["body"]["events"][0]["message_id"] == msg_id


def test_a_message_to_two_agents_is_announced_to_each(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        alice = d.add_agent("alice", "alice@t.test")
        bob = d.add_agent("bob", "bob@t.test")
        msg_id = d.send(plain("alice@t.test"), ["alice@t.test", "bob@t.test"])
        d.wait_message(alice["api_key"], msg_id)
        for agent in (alice, bob):
            types = [e["type"] for e in _all_events(d, agent["api_key"], 2)]
            assert types == ["message.received", "message.ready"]


def test_the_feed_survives_a_restart_without_loss_or_repeats(fresh_root: Path) -> None:
    fresh_root.mkdir(parents=True, exist_ok=True)
    config = write_config(fresh_root)
    d = start_daemon(fresh_root, config)
    try:
        alice = d.add_agent("alice", "alice@t.test")
        first = d.send(plain("alice@t.test"), ["alice@t.test"])
        d.wait_message(alice["api_key"], first)
        before = _all_events(d, alice["api_key"], 2)
        cursor = before[-1]["cursor"]
    finally:
        assert d.stop() == 0
    d = start_daemon(fresh_root, config)
    try:
        second = d.send(plain("alice@t.test"), ["alice@t.test"])
        d.wait_message(alice["api_key"], second)
        after: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while len(after) < 2 and time.monotonic() < deadline:
            page = _events(d, alice["api_key"], cursor, wait=2)
            after += page["events"]
            cursor = page["next_cursor"]
        assert [(e["type"], e["message_id"]) for e in after] == [
            ("message.received", second), ("message.ready", second)]
        everything = _all_events(d, alice["api_key"], 4)
        assert [e["cursor"] for e in everything] == [e["cursor"] for e in before + after]
        assert [e["id"] for e in everything] == [e["id"] for e in before + after]  # stable
    finally:
        assert d.stop() == 0


def test_bad_cursors_and_waits_are_refused(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        alice = d.add_agent("alice", "alice@t.test")
        with d.api(alice["api_key"]) as api:
            assert api.get("/v1/events", params={"after": "-1"}).status_code == 400
            assert api.get("/v1/events", params={"after": "x" * 40}).status_code == 422
            assert api.get("/v1/events", params={"wait": 31}).status_code == 422
            r = api.get("/v1/events", params={"after": "99999999999999999999"})
            assert r.status_code == 400
            assert r.json()["error"]["code"] == "invalid_cursor"
        with d.api("not-a-key") as api:
            assert api.get("/v1/events").status_code == 401


def test_large_attachments_are_announced_pending_before_ready(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        alice = d.add_agent("alice", "alice@t.test")
        big = b"%PDF-1.4\n" + os.urandom(9 * 1024 * 1024)  # above the 8 MiB pending-first bound
        msg_id = d.send(with_attachment("alice@t.test", big), ["alice@t.test"])
        d.wait_message(alice["api_key"], msg_id, timeout=60)
        events = _all_events(d, alice["api_key"], 4)
        assert [(e["type"], e["index"]) for e in events] == [
            ("message.received", None), ("attachment.pending", 0), ("attachment.ready", 0),
            ("message.ready", None)]
        assert events[1]["attachment_id"] == events[2]["attachment_id"]


def test_uploads_are_announced_once_when_ready(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        alice = d.add_agent("alice", "alice@t.test")
        with d.api(alice["api_key"]) as api:
            direct = api.post("/v1/uploads", files={"file": ("a.txt", b"hello", "text/plain")})
            assert direct.status_code == 201, direct.text
            put = api.post("/v1/uploads/url", json={"file_name": "b.txt",
                                                    "content_type": "text/plain", "size": 3})
            assert put.status_code == 200, put.text
            ticket = put.json()
            # Pending until the bytes arrive: no event yet for the second upload.
            assert [e["attachment_id"] for e in _events(d, alice["api_key"])["events"]] == [
                direct.json()["id"]]
            sent = httpx.put(ticket["upload_url"], content=b"abc",
                             headers={"Content-Type": "text/plain"})
            assert sent.status_code in (200, 204), sent.text
            for _ in range(2):  # looking twice announces it once
                assert api.get(f"/v1/attachments/{ticket['id']}").json()["status"] == "ready"
        events = _events(d, alice["api_key"])["events"]
        assert [(e["type"], e["attachment_id"], e["message_id"]) for e in events] == [
            ("upload.ready", direct.json()["id"], None), ("upload.ready", ticket["id"], None)]
