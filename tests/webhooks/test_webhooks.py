"""Webhooks through the real daemon (SPEC §14): endpoints in the API, signed POSTs verified
by `standardwebhooks` in a receiver on loopback, retries, failing and gone endpoints, DNS
checks, kill -9 with deliveries pending, two agents kept apart."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import (
    TEST_DATABASE,
    Daemon,
    running_daemon,
    start_daemon,
    wait_until,
    write_config,
)
from tests.webhooks.receiver import Receiver

FAST = ('[webhooks]\nallow_private_networks = true\ntimeout = "1s"\n'
        'retries = ["0.2s", "0.2s", "0.2s"]\n')


@contextlib.contextmanager
def _receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


def _mail(to: str, subject: str = "hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "sender@example.org", to, subject
    msg.set_content("a body")
    return msg


def _hook(api: httpx.Client, receiver: Receiver, **extra: Any) -> dict[str, Any]:
    r = api.post("/v1/webhooks", json={"url": receiver.url, **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    receiver.secrets.append(body["secret"])
    return body


def _agent(d: Daemon, name: str) -> tuple[httpx.Client, str]:
    info = d.add_agent(name, f"{name}@agents.test")
    return d.api(info["api_key"]), f"{name}@agents.test"


def _feed(api: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = api.get("/v1/events", params={"limit": 500}).json()["events"]
    return events


def _attempts(api: httpx.Client, hook_id: str) -> list[dict[str, Any]]:
    r = api.get(f"/v1/webhooks/{hook_id}/deliveries")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["deliveries"]
    return rows


def test_endpoints_are_the_agents_own_and_the_secret_is_shown_once(fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra=FAST + "max_per_agent = 2\n") as d, _receiver() as rx:
        a, _ = _agent(d, "alice")
        b, _ = _agent(d, "bob")
        with a, b:
            made = _hook(a, rx, event_types=["message.received"], description="inbox")
            assert made["id"].startswith("wh_") and made["secret"].startswith("whsec_")
            assert made["enabled"] and made["event_types"] == ["message.received"]
            got = a.get(f"/v1/webhooks/{made['id']}").json()
            assert "secret" not in got or got["secret"] is None
            assert [w["id"] for w in a.get("/v1/webhooks").json()["webhooks"]] == [made["id"]]
            # Another agent's webhook is not there for bob, whatever he asks.
            hook = f"/v1/webhooks/{made['id']}"
            assert b.get(hook).status_code == 404
            assert b.patch(hook, json={"enabled": False}).status_code == 404
            assert b.post(f"{hook}/rotate-secret").status_code == 404
            assert b.get(f"{hook}/deliveries").status_code == 404
            assert b.post(f"{hook}/replay", json={"after": "0"}).status_code == 404
            assert b.delete(hook).status_code == 404
            assert b.get("/v1/webhooks").json()["webhooks"] == []
            # What cannot be an endpoint.
            for bad in ({"url": "ftp://127.0.0.1/x"}, {"url": "http://u:p@127.0.0.1/x"},
                        {"url": rx.url, "event_types": ["message.exploded"]},
                        {"url": rx.url, "event_types": []}, {"url": rx.url, "secret": "x"}):
                assert a.post("/v1/webhooks", json=bad).status_code == 422, bad
            changed = a.patch(hook, json={"event_types": None, "description": "all"}).json()
            assert changed["event_types"] is None and changed["description"] == "all"
            assert a.patch(hook, json={"url": None}).status_code == 422
            _hook(a, rx)
            assert a.post("/v1/webhooks", json={"url": rx.url}).status_code == 409  # max 2
            assert a.delete(hook).status_code == 204
            assert a.get(hook).status_code == 404


def test_each_event_arrives_signed_with_its_id_and_only_at_its_agents_endpoint(
        fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra=FAST) as d, _receiver() as rx_a, \
            _receiver() as rx_b:
        a, alice = _agent(d, "alice")
        b, bob = _agent(d, "bob")
        with a, b:
            _hook(a, rx_a)
            _hook(b, rx_b)
            d.send(_mail(alice, "for alice"), [alice])
            d.send(_mail(bob, "for bob"), [bob])
            d.send(_mail(alice, "again for alice"), [alice])

            def settled(api: httpx.Client, rx: Receiver) -> list[dict[str, Any]] | None:
                feed = _feed(api)
                ready = [e for e in feed if e["type"] == "message.ready"]
                return feed if len(ready) == (2 if rx is rx_a else 1) and \
                    rx.ids() >= {e["id"] for e in feed} else None

            feed_a = wait_until(lambda: settled(a, rx_a), what="alice's events at her endpoint")
            feed_b = wait_until(lambda: settled(b, rx_b), what="bob's events at his endpoint")
            for rx, feed in ((rx_a, feed_a), (rx_b, feed_b)):
                assert all(x.verified for x in rx.arrivals)  # standardwebhooks agrees
                assert len(rx.arrivals) == len(rx.ids())  # nothing twice while all goes well
                by_id = {x.webhook_id: x.body for x in rx.arrivals}
                assert set(by_id) == {e["id"] for e in feed}  # nothing of the other agent's
                for event in feed:
                    body = by_id[event["id"]]
                    assert body == {"type": event["type"], "timestamp": event["created_at"],
                                    "data": event}
                    if event["type"] == "message.ready":  # SPEC §15: what it says, where
                        assert body["data"]["preview"] == "a body"
                        assert body["data"]["thread_id"].startswith("thr_")
            messages_a = {e["message_id"] for e in feed_a}
            assert not messages_a & {e["message_id"] for e in feed_b}


def test_a_failing_endpoint_is_retried_with_the_same_id_then_failed_then_replayed(
        fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra=FAST) as d, _receiver() as rx:
        a, alice = _agent(d, "alice")
        with a:
            rx.answer = 500
            hook = _hook(a, rx, event_types=["message.received"])
            d.send(_mail(alice), [alice])
            # 1 + 3 retries, each 0.2 s apart, then failed.
            rows = wait_until(lambda: (r := _attempts(a, hook["id"])) and r[0]["status"] == "failed"
                         and r, what="the last attempt")
            assert [r["attempt"] for r in rows] == [4, 3, 2, 1]
            assert [r["status"] for r in rows] == ["failed", "pending", "pending", "pending"]
            assert {r["status_code"] for r in rows} == {500}
            assert len({r["event_id"] for r in rows}) == 1
            assert len(rx.arrivals) == 4 and len(rx.ids()) == 1  # the same webhook-id each time
            assert all(x.verified for x in rx.arrivals)
            failing = a.get(f"/v1/webhooks/{hook['id']}").json()
            assert failing["failing_since"] is not None and failing["enabled"]
            rx.answer = 204
            r = a.post(f"/v1/webhooks/{hook['id']}/replay", json={"after": "0"})
            assert r.status_code == 202, r.text
            assert r.json()["queued"] == 1
            wait_until(lambda: _attempts(a, hook["id"])[0]["status"] == "delivered",
                  what="the replayed delivery")
            assert len(rx.arrivals) == 5 and len(rx.ids()) == 1
            assert a.get(f"/v1/webhooks/{hook['id']}").json()["failing_since"] is None
            page = a.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 2}).json()
            rest = a.get(f"/v1/webhooks/{hook['id']}/deliveries",
                         params={"before": page["next_before"]}).json()
            assert page["has_more"] and len(page["deliveries"]) + len(rest["deliveries"]) == 5
            assert a.post(f"/v1/webhooks/{hook['id']}/replay",
                          json={"after": "x"}).status_code == 400
            metrics = wait_until(lambda: (m := _metrics(d)).get(
                'postroom_webhook_deliveries{status="delivered"}') and m, what="the counts")
            assert metrics['postroom_webhook_attempts_total{outcome="retry"}'] == 3
            assert metrics['postroom_webhook_attempts_total{outcome="failed"}'] == 1
            assert metrics['postroom_webhook_attempts_total{outcome="delivered"}'] == 1


def _metrics(d: Daemon) -> dict[str, float]:
    text = httpx.get(f"{d.url}/metrics", timeout=10).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_a_hanging_endpoint_times_out_and_delays_no_other(fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra=FAST) as d, _receiver() as slow, \
            _receiver() as fast:
        a, alice = _agent(d, "alice")
        with a:
            slow.hang_for = 3.0  # past webhooks.timeout (1 s)
            slow_hook = _hook(a, slow, event_types=["message.received"])
            _hook(a, fast, event_types=["message.received"])
            for n in range(6):
                d.send(_mail(alice, f"mail {n}"), [alice])
            wait_until(lambda: len(fast.ids()) == 6, what="every event at the fast endpoint")
            # By then the slow endpoint has had at most per_endpoint (4) POSTs at once.
            assert len(slow.arrivals) <= 4
            rows = wait_until(lambda: _attempts(a, slow_hook["id"]), what="a timed-out attempt")
            assert rows[0]["status_code"] is None and rows[0]["error"]


def test_redirects_are_not_followed_and_answers_are_read_up_to_4_kB(fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra=FAST) as d, _receiver() as rx, \
            _receiver() as elsewhere:
        a, alice = _agent(d, "alice")
        with a:
            rx.answer, rx.location = 307, elsewhere.url
            rx.answer_body = b"x" * 5_000_000  # more than anyone should read
            hook = _hook(a, rx, event_types=["message.received"])
            elsewhere.secrets.append(hook["secret"])
            d.send(_mail(alice), [alice])
            rows = wait_until(lambda: _attempts(a, hook["id"]), what="the redirected attempt")
            assert rows[0]["status_code"] == 307 and rows[0]["status"] == "pending"
            assert len(rows[0]["response"]) == 1024  # the log keeps 1 kB of the 4 read
            wait_until(lambda: len(_attempts(a, hook["id"])) >= 2, what="the retry")
            assert elsewhere.arrivals == []


def test_an_endpoint_that_goes_away_and_comes_back_gets_everything(fresh_root: Path) -> None:
    extra = FAST.replace('["0.2s", "0.2s", "0.2s"]', '["0.2s", "0.3s", "0.5s", "1s", "1s"]')
    with running_daemon(fresh_root, extra=extra) as d, _receiver() as rx:
        a, alice = _agent(d, "alice")
        with a:
            hook = _hook(a, rx, event_types=["message.received"])
            rx.stop()
            for n in range(3):
                d.send(_mail(alice, f"mail {n}"), [alice])
            wait_until(lambda: len(_attempts(a, hook["id"])) >= 3, what="refused attempts")
            assert all(r["status_code"] is None for r in _attempts(a, hook["id"]))
            rx.start()
            wait_until(lambda: len(rx.ids()) == 3, what="the deliveries after the endpoint is back")
            assert all(x.verified for x in rx.arrivals)


def test_gone_disables_with_an_event_and_failing_too_long_disables(fresh_root: Path) -> None:
    extra = FAST.replace('["0.2s", "0.2s", "0.2s"]', '["0.2s", "0.2s", "0.2s", "0.2s"]') + \
        'disable_after = "0.5s"\n'
    with running_daemon(fresh_root, extra=extra) as d, _receiver() as gone, \
            _receiver() as failing, _receiver() as watcher:
        a, alice = _agent(d, "alice")
        with a:
            gone.answer, failing.answer = 410, 503
            gone_hook = _hook(a, gone, event_types=["message.received"])
            failing_hook = _hook(a, failing, event_types=["message.received"])
            _hook(a, watcher, event_types=["webhook.disabled"])
            d.send(_mail(alice), [alice])
            disabled = wait_until(lambda: len(watcher.bodies("webhook.disabled")) == 2
                             and watcher.bodies("webhook.disabled"), what="two disabled events")
            reasons = {e["data"]["webhook_id"]: e["data"]["status"] for e in disabled}
            assert reasons == {gone_hook["id"]: "gone", failing_hook["id"]: "failing"}
            assert len(gone.arrivals) == 1  # 410 is not retried
            for hook, reason in ((gone_hook, "gone"), (failing_hook, "failing")):
                view = a.get(f"/v1/webhooks/{hook['id']}").json()
                assert not view["enabled"] and view["disabled_reason"] == reason
            feed = [e for e in _feed(a) if e["type"] == "webhook.disabled"]
            assert {e["webhook_id"] for e in feed} == set(reasons)
            # Disabled: nothing more is sent; enabled again: from the next event on.
            before = len(failing.arrivals)
            assert a.post(f"/v1/webhooks/{failing_hook['id']}/replay",
                          json={"after": "0"}).status_code == 409
            failing.answer = 204
            d.send(_mail(alice, "while disabled"), [alice])
            wait_until(lambda: len([e for e in _feed(a) if e["type"] == "message.received"]) == 2,
                  what="the second message.received")
            enabled = a.patch(f"/v1/webhooks/{failing_hook['id']}", json={"enabled": True})
            assert enabled.json()["enabled"] and enabled.json()["disabled_reason"] is None
            d.send(_mail(alice, "after"), [alice])
            wait_until(lambda: any(x.body["type"] == "message.received" and x.verified
                              for x in failing.arrivals[before:]), what="the next event")
            time.sleep(0.3)
            assert len(failing.arrivals) == before + 1  # not the one sent while disabled


def test_private_addresses_are_refused_at_creation_and_at_delivery(fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra=FAST) as d, _receiver() as rx:
        a, alice = _agent(d, "alice")
        with a:
            hook = _hook(a, rx, event_types=["message.received"])
            key = str(a.headers["authorization"]).split()[1]
    # The same endpoint, now that the node refuses private networks: as if its name had come
    # to resolve to loopback after it was created (DNS rebinding).
    config = write_config(fresh_root, extra='[webhooks]\ntimeout = "1s"\n')
    d = start_daemon(fresh_root, config)
    try:
        with d.api(key) as a, _receiver() as rx2:
            for url in (rx2.url, "http://localhost:9/x", "http://[::1]:9/x",
                        "http://169.254.169.254/latest", "http://10.1.2.3/x"):
                r = a.post("/v1/webhooks", json={"url": url})
                assert r.status_code == 422, (url, r.text)
            d.send(_mail(alice), [alice])
            rows = wait_until(lambda: _attempts(a, hook["id"]), what="the refused attempt")
            assert rows[0]["status_code"] is None and rows[0]["error"]
            assert rx.arrivals == []
    finally:
        assert d.stop() == 0


def test_deliveries_pending_at_kill_9_are_all_made_after_restart(fresh_root: Path) -> None:
    # Retried for ~9 s: still pending when killed, due soon after the restart.
    extra = FAST.replace('["0.2s", "0.2s", "0.2s"]', '["0.2s", "0.5s"' + ', "1s"' * 8 + ']')
    fresh_root.mkdir(parents=True, exist_ok=True)
    config = write_config(fresh_root, extra=extra)
    d = start_daemon(fresh_root, config)
    rx = Receiver()
    try:
        a, alice = _agent(d, "alice")
        key = str(a.headers["authorization"]).split()[1]
        with a:
            _hook(a, rx)
            rx.stop()  # deliveries pile up, pending
            for n in range(5):
                d.send(_mail(alice, f"mail {n}"), [alice])
            feed = wait_until(lambda: (f := _feed(a)) and len(
                [e for e in f if e["type"] == "message.ready"]) == 5
                and f, what="five messages ready")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.close_pipes()
        rx.start()
        d = start_daemon(fresh_root, config)
        with d.api(key) as a:
            feed = _feed(a)
            # On PostgreSQL a POST the killed node had under way waits for its lease (10 s).
            wait_until(lambda: rx.ids() >= {e["id"] for e in feed}, 30,
                       what="every event delivered")
            assert all(x.verified for x in rx.arrivals)
    finally:
        rx.stop()
        if d.proc.poll() is None:
            assert d.stop() == 0


def test_quarantined_mail_is_not_pushed_to_an_agent_that_accepts_only_authenticated(
        fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra=FAST) as d, _receiver() as rx:
        a, alice = _agent(d, "alice")
        with a:
            d.cli("agent", "set", "alice", "--accept", "authenticated")
            _hook(a, rx)
            d.send(_mail(alice, "unauthenticated"), [alice])  # no SPF, no DKIM: not pass
            r = a.post("/v1/uploads", files={"file": ("n.txt", b"x", "text/plain")})
            assert r.status_code == 201, r.text
            wait_until(lambda: rx.bodies("upload.ready"), what="the upload's event")
            assert {b["type"] for b in rx.bodies()} == {"upload.ready"}
            all_events = a.get("/v1/events", params={"include": "quarantined"}).json()["events"]
            assert any(e["type"] == "message.received" for e in all_events)


@pytest.mark.skipif(TEST_DATABASE != "postgresql", reason="several nodes share PostgreSQL")
def test_two_nodes_on_one_database_deliver_each_event_once(tmp_path: Path) -> None:
    # Both nodes fan out the same endpoint: its cursor moves once, and a node POSTs only what
    # its own cursor move won, so nothing arrives twice while all goes well.
    first, second = tmp_path / "a", tmp_path / "b"
    for root in (first, second):
        root.mkdir()
    nodes = []
    with _receiver() as rx:
        try:
            nodes.append(start_daemon(first, write_config(first, extra=FAST)))
            (second / ".test-database-url").write_text(
                (first / ".test-database-url").read_text())
            nodes.append(start_daemon(second, write_config(second, extra=FAST)))
            a, alice = _agent(nodes[0], "alice")
            with a:
                _hook(a, rx)
                for n in range(12):
                    nodes[n % 2].send(_mail(alice, f"mail {n}"), [alice])
                wait_until(lambda: len([e for e in _feed(a) if e["type"] == "message.ready"]) == 12,
                      what="every message ready")
                feed = {e["id"] for e in _feed(a)}
                wait_until(lambda: rx.ids() >= feed, what="every event at the endpoint")
                time.sleep(0.5)  # a second copy, were one sent, would be on its way by now
                assert len(rx.arrivals) == len(rx.ids()) == len(feed)
        finally:
            for d in nodes:
                assert d.stop() == 0
