"""Sending survives the daemon: every 202 is delivered exactly once after a kill -9, and what
leaves is DKIM-signed so that dkimpy verifies it against the record one would publish."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import dkim

from tests.capture import CaptureServer, free_port
from tests.harness import start_daemon, write_config
from tests.outbound.test_compose import _ed25519_key, _rsa_key
from tests.outbound.test_send import _wait


def _outbound(relay: str, extra: str = "") -> str:
    return (f'[outbound]\nrelay = "{relay}"\npoll_interval = "0.2s"\nretry_base = "0.3s"\n'
            + extra)


def test_every_202_is_delivered_exactly_once_after_a_kill(fresh_root: Path) -> None:
    fresh_root.mkdir(parents=True)
    relay = CaptureServer(free_port())  # down while the first daemon runs
    config = write_config(fresh_root, extra=_outbound(relay.url))
    first = start_daemon(fresh_root, config)
    alice = first.add_agent("alice", "alice@agents.test")
    bob = first.add_agent("bob", "bob@agents.test")
    with first.api(alice["api_key"]) as a:
        remote = [a.post("/v1/messages", json={"to": [f"r{i}@example.test"], "text": str(i)}
                         ).json()["id"] for i in range(12)]
        local = [a.post("/v1/messages", json={"to": ["bob@agents.test"], "text": str(i)}
                        ).json()["id"] for i in range(8)]
    first.proc.send_signal(signal.SIGKILL)  # straight after the last 202, deliveries in flight
    first.proc.wait()
    first.close_pipes()
    relay.start()
    second = start_daemon(fresh_root, config)
    try:
        captured = relay.wait_for(len(remote))
        with second.api(alice["api_key"]) as a:
            def all_done() -> bool:
                return all(a.get(f"/v1/messages/{m}").json()["status"] == "sent"
                           for m in remote + local)
            _wait(all_done, within=60, what="every message sent")
        assert sorted(c.mail_from for c in relay.received) == sorted(
            f"bounces+{m}@agents.test" for m in remote)
        assert len(captured) == len(relay.received) == len(remote)
        with second.api(bob["api_key"]) as b:
            got = [m for m in b.get("/v1/messages").json()["messages"]
                   if m["direction"] == "inbound"]
        assert len(got) == len(local)  # a local copy made before the kill is not made again
    finally:
        second.stop()
        relay.stop()


def test_what_leaves_is_signed_and_verifies_against_the_published_record(
        fresh_root: Path, tmp_path: Path) -> None:
    fresh_root.mkdir(parents=True)
    records = {b"rsa1._domainkey.agents.test.": _rsa_key(tmp_path / "rsa.pem").encode(),
               b"ed1._domainkey.agents.test.": _ed25519_key(tmp_path / "ed.key").encode()}
    keys = (f'[[outbound.dkim]]\ndomain = "agents.test"\nselector = "rsa1"\n'
            f'key_file = "{tmp_path / "rsa.pem"}"\n'
            f'[[outbound.dkim]]\ndomain = "agents.test"\nselector = "ed1"\n'
            f'key_file = "{tmp_path / "ed.key"}"\nalgorithm = "ed25519-sha256"\n')
    with CaptureServer() as relay:
        d = start_daemon(fresh_root, write_config(fresh_root, extra=_outbound(relay.url, keys)))
        try:
            alice = d.add_agent("alice", "alice@agents.test")
            with d.api(alice["api_key"]) as a:
                assert a.post("/v1/messages", json={
                    "to": ["carol@example.test"], "subject": "signed", "text": "body ✓",
                    "html": "<p>body</p>"}).status_code == 202
            [captured] = relay.wait_for(1)
        finally:
            d.stop()

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    signatures = [line for line in captured.data.split(b"\r\n")
                  if line.startswith(b"DKIM-Signature:")]
    assert len(signatures) == 2
    for index in range(2):
        assert dkim.DKIM(captured.data).verify(idx=index, dnsfunc=lookup)
    assert not dkim.verify(captured.data.replace(b"signed", b"forged"), dnsfunc=lookup)


def test_a_stopped_node_gives_back_the_recipients_it_was_sending(fresh_root: Path) -> None:
    """SIGTERM while the relay holds a transaction: the lease is given back at once (another
    node would take the recipient up now, not a lease later), and it is delivered after."""
    fresh_root.mkdir(parents=True)
    with CaptureServer() as relay:
        relay.handler.hold.set()
        config = write_config(fresh_root, extra=_outbound(relay.url))
        first = start_daemon(fresh_root, config)
        alice = first.add_agent("alice", "alice@agents.test")
        with first.api(alice["api_key"]) as a:
            sent = a.post("/v1/messages", json={"to": ["x@example.test"], "text": "x"}).json()
        assert relay.handler.holding.wait(30), "the relay never saw the DATA"
        assert first.stop() == 0
        with sqlite3.connect(fresh_root / "var" / "postroom.db") as db:
            leases = db.execute("SELECT status, lease_owner FROM deliveries").fetchall()
        assert leases == [("sending", None)]
        relay.handler.hold.clear()
        second = start_daemon(fresh_root, config)
        try:
            with second.api(alice["api_key"]) as a:
                _wait(lambda: a.get(f"/v1/messages/{sent['id']}").json()["status"] == "sent",
                      within=60, what="sent after the restart")
        finally:
            second.stop()
