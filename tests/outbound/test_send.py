"""Agents send mail through the real daemon (SPEC §12): `POST /v1/messages`, local delivery
between two agents, delivery through a relay to a capturing server, retries, refusals."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.capture import CaptureServer, free_port
from tests.harness import Daemon, running_daemon
from tests.outbound.test_bounces import POSTFIX_DSN
from tests.pgpkeys import make_key


def _wait(predicate: Any, within: float = 30.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + within
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _upload(api: httpx.Client, name: str, data: bytes, ctype: str) -> dict[str, Any]:
    r = api.post("/v1/uploads", files={"file": (name, data, ctype)})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _inbox(api: httpx.Client, direction: str = "inbound") -> list[dict[str, Any]]:
    msgs = api.get("/v1/messages").json()["messages"]
    return [m for m in msgs if m["direction"] == direction]


@contextlib.contextmanager
def _agent(d: Daemon, name: str, *addresses: str) -> Iterator[tuple[httpx.Client, str]]:
    """A new agent's API client (closed afterwards) and its key."""
    info = d.add_agent(name, *addresses)
    with d.api(info["api_key"]) as api:
        yield api, info["api_key"]


def _deliveries(api: httpx.Client, message_id: str) -> dict[str, str]:
    view = api.get(f"/v1/messages/{message_id}").json()
    return {r["address"]: r["status"] for r in view["deliveries"]}


@pytest.fixture
def relay() -> Any:
    with CaptureServer() as cap:
        yield cap


def _daemon(root: Path, relay_url: str | None = None, extra: str = "") -> Any:
    relay = f'relay = "{relay_url}"\n' if relay_url else ""
    out = '[outbound]\npoll_interval = "0.2s"\nretry_base = "0.3s"\n' + relay + extra
    return running_daemon(root, extra=out)


def test_two_agents_on_one_postroom_write_to_each_other_with_attachments(
        fresh_root: Path) -> None:
    with _daemon(fresh_root) as d, _agent(d, "alice", "alice@agents.test") as (a, alice_key), \
            _agent(d, "bob", "bob@agents.test") as (b, bob_key):
        data = os.urandom(200_000)
        up = _upload(a, "report.pdf", data, "application/pdf")
        r = a.post("/v1/messages", json={
            "to": ["bob@agents.test"], "subject": "the report", "text": "attached",
            "attachments": [{"object_key": up["object_key"]}]})
        assert r.status_code == 202, r.text
        sent = r.json()
        assert sent["direction"] == "outbound" and sent["status"] == "queued"
        assert sent["id"].startswith("msg_") and sent["thread_id"].startswith("thr_")
        got = _wait(lambda: _inbox(b), what="bob's copy")
        copy = d.wait_message(bob_key, got[0]["id"])
        assert copy["subject"] == "the report"
        assert [(x["file_name"], x["sha256"]) for x in copy["attachments"]] == [
            ("report.pdf", hashlib.sha256(data).hexdigest())]
        assert _wait(lambda: _deliveries(a, sent["id"]) == {"bob@agents.test": "delivered"},
                     what="the delivery's status")
        assert [m["id"] for m in _inbox(a, "outbound")] == [sent["id"]]
        types = [e["type"] for e in a.get("/v1/events").json()["events"]]
        assert "message.delivered" in types
        # Bob answers in the same thread.
        reply = b.post("/v1/messages", json={"to": ["alice@agents.test"],
                                             "subject": "Re: the report", "text": "thanks",
                                             "in_reply_to": copy["id"]})
        assert reply.status_code == 202, reply.text
        assert reply.json()["thread_id"] == sent["thread_id"]
        back = _wait(lambda: _inbox(a), what="alice's copy of the reply")
        answered = d.wait_message(alice_key, back[0]["id"])
        assert answered["in_reply_to"] == copy["message_id"]


def test_mail_for_others_goes_through_the_relay_with_a_verp_sender(fresh_root: Path,
                                                                   relay: CaptureServer) -> None:
    with _daemon(fresh_root, relay.url) as d, _agent(d, "alice", "alice@agents.test") as (a, _):
        r = a.post("/v1/messages", json={
            "to": [{"email": "carol@example.test", "name": "Carol"}],
            "cc": ["dave@example.test"], "bcc": ["erin@example.test"],
            "subject": "héllo", "text": "plain", "html": "<p>rich</p>"})
        assert r.status_code == 202, r.text
        sent = r.json()
        [captured] = relay.wait_for(1)
        assert sorted(captured.rcpt_tos) == ["carol@example.test", "dave@example.test",
                                             "erin@example.test"]
        assert captured.mail_from == f"bounces+{sent['id']}@agents.test"
        parsed = message_from_bytes(captured.data, policy=policy.default)
        assert parsed["Subject"] == "héllo" and "Bcc" not in parsed
        assert parsed["From"] == "alice@agents.test"
        assert _wait(lambda: set(_deliveries(a, sent["id"]).values()) == {"sent"},
                     what="every recipient sent")
        types = [e["type"] for e in a.get("/v1/events").json()["events"]]
        assert "message.sent" in types
        [listed] = _inbox(a, "outbound")  # the list shows each recipient's status too
        assert {(r["address"], r["kind"], r["status"]) for r in listed["deliveries"]} == {
            ("carol@example.test", "to", "sent"), ("dave@example.test", "cc", "sent"),
            ("erin@example.test", "bcc", "sent")}


def test_a_refused_recipient_bounces_and_a_deferred_one_is_retried(
        fresh_root: Path, relay: CaptureServer) -> None:
    relay.handler.replies["gone@example.test"] = "550 5.1.1 no such user"
    relay.handler.replies["busy@example.test"] = "451 4.3.0 try later"
    with _daemon(fresh_root, relay.url) as d, _agent(d, "alice", "alice@agents.test") as (a, _):
        sent = a.post("/v1/messages", json={"to": ["gone@example.test", "busy@example.test",
                                                   "ok@example.test"], "text": "x"}).json()
        assert _wait(lambda: _deliveries(a, sent["id"]) == {
            "gone@example.test": "bounced", "busy@example.test": "deferred",
            "ok@example.test": "sent"}, what="the three outcomes")
        view = a.get(f"/v1/messages/{sent['id']}").json()
        busy = next(r for r in view["deliveries"] if r["address"] == "busy@example.test")
        assert busy["attempts"] == 1 and busy["next_attempt_at"] is not None
        assert busy["reply"].startswith("451")


def test_a_relay_that_is_down_gets_the_message_once_it_is_back(fresh_root: Path) -> None:
    port = free_port()
    cap = CaptureServer(port)
    with _daemon(fresh_root, cap.url) as d, _agent(d, "alice", "alice@agents.test") as (a, _):
        sent = a.post("/v1/messages", json={"to": ["x@example.test"], "text": "x"}).json()
        assert _wait(lambda: _deliveries(a, sent["id"]) == {"x@example.test": "deferred"},
                     what="the first attempt to fail")
        cap.start()
        try:
            [captured] = cap.wait_for(1)
            assert captured.rcpt_tos == ["x@example.test"]
            assert _wait(lambda: _deliveries(a, sent["id"]) == {"x@example.test": "sent"},
                         what="sent after the relay came back")
            assert len(cap.received) == 1  # `sent` is terminal: no attempt follows it
        finally:
            cap.stop()


def test_without_a_relay_others_fail_at_once_with_no_relay(fresh_root: Path) -> None:
    with _daemon(fresh_root) as d, _agent(d, "alice", "alice@agents.test") as (a, _):
        r = a.post("/v1/messages", json={"to": ["x@example.test"], "text": "x"})
        assert r.status_code == 202
        assert r.json()["recipients"] == [{"address": "x@example.test", "kind": "to",
                                           "status": "bounced", "reason": "no_relay"}]


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"to": ["x@example.test"], "from": "mallory@evil.test", "text": "x"}, 403,
     "forbidden_sender"),
    ({"to": ["x@example.test"], "subject": "a\r\nBcc: victim@example.test"}, 422,
     "invalid_message"),
    ({"to": ["x@example.test"], "headers": {"Received": "forged"}}, 422, "invalid_message"),
    ({"to": ["x@example.test"], "subject": "x" * 1_000_000}, 422, "invalid_message"),
    ({"to": [f"r{i}@example.test" for i in range(10_000)]}, 422, "too_many_recipients"),
    ({"to": ["x@example.test"], "attachments": [{"id": "upl_nope"}]}, 404, "not_found"),
    ({"to": ["x@example.test"], "in_reply_to": "msg_nope"}, 404, "not_found"),
    ({"to": ["x@example.test"], "attachments": [{}]}, 422, "invalid_request"),
])
def test_refusals_store_nothing_and_send_nothing(daemon: Daemon, alice: dict[str, Any],
                                                 body: dict[str, Any], status: int,
                                                 code: str) -> None:
    with daemon.api(alice["api_key"]) as a:
        before = a.get("/v1/messages").json()["messages"]
        r = a.post("/v1/messages", json=body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code
        assert a.get("/v1/messages").json()["messages"] == before


def test_another_agents_upload_is_404(daemon: Daemon, alice: dict[str, Any],
                                      bob: dict[str, Any]) -> None:
    with daemon.api(bob["api_key"]) as b, daemon.api(alice["api_key"]) as a:
        up = _upload(b, "b.txt", b"bob's", "text/plain")
        for ref in ({"object_key": up["object_key"]}, {"id": up["id"]}):
            r = a.post("/v1/messages", json={"to": ["x@example.test"], "attachments": [ref]})
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_the_same_idempotency_key_sends_once(fresh_root: Path, relay: CaptureServer) -> None:
    with _daemon(fresh_root, relay.url) as d, _agent(d, "alice", "alice@agents.test") as (a, _):
        body = {"to": ["x@example.test"], "text": "once"}
        first = a.post("/v1/messages", json=body, headers={"Idempotency-Key": "k-1"})
        again = a.post("/v1/messages", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        other = a.post("/v1/messages", json={**body, "text": "other"},
                       headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        relay.wait_for(1)
        assert _wait(lambda: _deliveries(a, first.json()["id"]) == {"x@example.test": "sent"})
        assert len(relay.received) == 1


def test_over_the_rate_is_429_with_retry_after(fresh_root: Path) -> None:
    with _daemon(fresh_root, extra="rate_per_agent = 2\n") as d, \
            _agent(d, "alice", "alice@agents.test") as (a, _):
        d.add_agent("bob", "bob@agents.test")
        for _ in range(2):
            assert a.post("/v1/messages", json={"to": ["bob@agents.test"]}).status_code == 202
        r = a.post("/v1/messages", json={"to": ["bob@agents.test"]})
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"


def test_a_dsn_to_the_verp_address_bounces_its_recipient_and_is_not_mail(
        fresh_root: Path, relay: CaptureServer) -> None:
    with _daemon(fresh_root, relay.url) as d, _agent(d, "alice", "*@agents.test") as (a, _):
        sent = a.post("/v1/messages", json={"from": "alice@agents.test", "text": "x",
                                            "to": ["gone@example.test", "ok@example.test"]}
                      ).json()
        [captured] = relay.wait_for(1)
        assert _wait(lambda: set(_deliveries(a, sent["id"]).values()) == {"sent"})
        with d.smtp() as smtp:
            refused = smtp.sendmail("", [captured.mail_from],
                                    POSTFIX_DSN.replace(b"\n", b"\r\n"))
        assert refused == {}
        assert _wait(lambda: _deliveries(a, sent["id"]) == {"gone@example.test": "bounced",
                                                            "ok@example.test": "sent"})
        view = a.get(f"/v1/messages/{sent['id']}").json()
        gone = next(r for r in view["deliveries"] if r["address"] == "gone@example.test")
        assert gone["reason"] == "dsn" and gone["reply"].startswith("5.1.1")
        assert view["status"] == "partial"
        assert _inbox(a) == []  # the catch-all agent did not get the DSN as mail
        assert "message.bounced" in [e["type"] for e in a.get("/v1/events").json()["events"]]
        with d.smtp() as smtp:  # a VERP shape naming no message of ours is unknown
            smtp.ehlo()
            code, _ = smtp.docmd("MAIL FROM:<>")
            code, _ = smtp.docmd("RCPT TO:<bounces+msg_00000000000000000000000000@other.test>")
            assert code == 550


def test_an_upload_not_yet_made_is_409_and_a_message_too_large_is_413(fresh_root: Path) -> None:
    with _daemon(fresh_root) as d, _agent(d, "alice", "alice@agents.test") as (a, _):
        form = a.post("/v1/uploads/form", json={"file_name": "later.pdf",
                                                "content_type": "application/pdf"}).json()
        r = a.post("/v1/messages", json={"to": ["x@example.test"],
                                         "attachments": [{"id": form["id"]}]})
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_ready"
    small = running_daemon(fresh_root.parent / "small", smtp='max_message_size = "64KiB"',
                           extra='[outbound]\npoll_interval = "0.2s"\n')
    with small as d, _agent(d, "alice", "alice@agents.test") as (a, _):
        up = _upload(a, "big.bin", os.urandom(60_000), "application/octet-stream")
        r = a.post("/v1/messages", json={"to": ["x@example.test"],
                                         "attachments": [{"id": up["id"]}]})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        assert _inbox(a, "outbound") == []


@pytest.mark.parametrize(("at_rest", "carol_gets"), [("when_key", "delivered"),
                                                   ("required", "bounced")])
def test_local_copies_follow_the_encryption_rules_smtp_applies(
        fresh_root: Path, tmp_path: Path, at_rest: str, carol_gets: str) -> None:
    """A keyed and a keyless agent get one copy each (encrypted, in the clear); with
    `at_rest = "required"` the keyless one bounces `no_key` instead."""
    for name in ("alice", "bob"):
        (tmp_path / f"{name}.asc").write_text(make_key(f"{name}@agents.test").public)
    with _daemon(fresh_root, extra=f'[encryption]\nat_rest = "{at_rest}"\n') as d:
        keys = {name: json.loads(d.cli("agent", "add", name, "--address", f"{name}@agents.test",
                                       "--pgp-key", str(tmp_path / f"{name}.asc"),
                                       "--json").stdout)["api_key"] for name in ("alice", "bob")}
        carol = d.cli("agent", "add", "carol", "--address", "carol@agents.test", "--json")
        carol_key = json.loads(carol.stdout)["api_key"]
        with d.api(keys["alice"]) as a, d.api(keys["bob"]) as b, d.api(carol_key) as c:
            sent = a.post("/v1/messages", json={"to": ["bob@agents.test", "carol@agents.test"],
                                                "text": "secret"}).json()
            assert _wait(lambda: _deliveries(a, sent["id"]) == {
                "bob@agents.test": "delivered", "carol@agents.test": carol_gets})
            [copy] = _wait(lambda: _inbox(b))
            view = d.wait_message(keys["bob"], copy["id"])
            assert view["encryption"] is not None and "secret" not in (view["text"] or "")
            if carol_gets == "delivered":
                [plain] = _wait(lambda: _inbox(c))
                assert d.wait_message(carol_key, plain["id"])["text"].strip() == "secret"
            else:
                view = a.get(f"/v1/messages/{sent['id']}").json()
                reasons = {r["address"]: r["reason"] for r in view["deliveries"]}
                assert reasons["carol@agents.test"] == "no_key"
