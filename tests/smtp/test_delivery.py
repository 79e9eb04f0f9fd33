"""Mail in over real SMTP, out over the real API: statuses, bytes, names, URLs, authorization."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.harness import Daemon
from tests.mail import plain, with_attachment

PDF = b"%PDF-1.7\n" + os.urandom(50_000) + b"\n%%EOF\n"


def test_delivered_attachment_becomes_ready_and_downloads_exactly(
        daemon: Daemon, alice: dict[str, Any]) -> None:
    msg_id = daemon.send(with_attachment("alice@agents.test", PDF), ["alice@agents.test"])
    assert msg_id.startswith("msg_")
    message = daemon.wait_message(alice["api_key"], msg_id)
    assert message["status"] == "ready"
    assert message["subject"] == "Quarterly report"
    assert message["text"].startswith("Please see the attached report.")
    assert message["has_attachments"] is True
    [att] = message["attachments"]
    assert att["status"] == "ready"
    assert att["file_name"] == "report.pdf"
    assert att["content_type"] == "application/pdf"
    assert att["size"] == len(PDF)
    assert att["sha256"] == hashlib.sha256(PDF).hexdigest()
    with daemon.api(alice["api_key"]) as api:
        r = api.post(f"/v1/messages/{msg_id}/attachments/0/download")
        assert r.status_code == 200, r.text
        link = r.json()
        assert link["sha256"] == att["sha256"] and link["size"] == len(PDF)
        got = httpx.get(link["url"])
    assert got.status_code == 200
    assert got.content == PDF
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert "filename*=UTF-8''report.pdf" in got.headers["content-disposition"]


def test_wait_returns_terminal_status(daemon: Daemon, alice: dict[str, Any]) -> None:
    msg_id = daemon.send(with_attachment("alice@agents.test", PDF), ["alice@agents.test"])
    with daemon.api(alice["api_key"]) as api:
        r = api.get(f"/v1/messages/{msg_id}/attachments/0", params={"wait": 10})
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    assert r.json()["index"] == 0 and r.json()["message_id"] == msg_id


def test_utf8_name_and_active_type_are_served_safely(daemon: Daemon, alice: dict[str, Any]) -> None:
    html = b"<html><script>alert(1)</script></html>"
    msg = with_attachment("alice@agents.test", html, file_name="Résumé été.html",
                          content_type="text/html")
    msg_id = daemon.send(msg, ["alice@agents.test"])
    message = daemon.wait_message(alice["api_key"], msg_id)
    [att] = [a for a in message["attachments"] if a["file_name"].endswith(".html")]
    assert att["file_name"] == "Résumé été.html"
    with daemon.api(alice["api_key"]) as api:
        link = api.post(f"/v1/messages/{msg_id}/attachments/{att['index']}/download").json()
    got = httpx.get(link["url"])
    assert got.content == html
    assert got.headers["content-type"] == "application/octet-stream"
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%20%C3%A9t%C3%A9.html" in got.headers[
        "content-disposition"]


def test_tampered_url_is_forbidden(daemon: Daemon, alice: dict[str, Any]) -> None:
    msg_id = daemon.send(with_attachment("alice@agents.test", PDF), ["alice@agents.test"])
    daemon.wait_message(alice["api_key"], msg_id)
    with daemon.api(alice["api_key"]) as api:
        url = api.post(f"/v1/messages/{msg_id}/attachments/0/download").json()["url"]
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    base = f"{parts.scheme}://{parts.netloc}"
    assert httpx.get(url).status_code == 200
    tampered = [
        {**q, "sig": q["sig"][:-2] + ("AA" if not q["sig"].endswith("AA") else "BB")},
        {**q, "exp": str(int(q["exp"]) + 3600)},
        {**q, "ct": "text/html"},
        {k: v for k, v in q.items() if k != "sig"},
    ]
    for params in tampered:
        r = httpx.get(f"{base}{parts.path}?{urlencode(params)}")
        assert r.status_code == 403, params
        assert r.json()["error"]["code"] == "forbidden"
    other_key = parts.path.replace("/0", "/1") if parts.path.endswith("/0") else parts.path + "x"
    assert httpx.get(f"{base}{other_key}?{parts.query}").status_code == 403


def test_expired_url_is_forbidden(daemon: Daemon, alice: dict[str, Any]) -> None:
    msg_id = daemon.send(with_attachment("alice@agents.test", PDF), ["alice@agents.test"])
    daemon.wait_message(alice["api_key"], msg_id)
    with daemon.api(alice["api_key"]) as api:
        r = api.post(f"/v1/messages/{msg_id}/attachments/0/download", json={"expires_in": 1})
    assert r.status_code == 200
    url = r.json()["url"]
    # Polled, not slept on: the URL stops working once its second is over.
    daemon.wait_for(lambda: httpx.get(url).status_code == 403, 10, "the URL to expire")


def test_expires_in_is_capped_by_presign_ttl(daemon: Daemon, alice: dict[str, Any]) -> None:
    msg_id = daemon.send(with_attachment("alice@agents.test", PDF), ["alice@agents.test"])
    daemon.wait_message(alice["api_key"], msg_id)
    with daemon.api(alice["api_key"]) as api:
        r = api.post(f"/v1/messages/{msg_id}/attachments/0/download",
                     json={"expires_in": 86400})
        assert r.status_code == 200
        q = parse_qs(urlsplit(r.json()["url"]).query)
        assert int(q["exp"][0]) <= time.time() + 900 + 2
        bad = api.post(f"/v1/messages/{msg_id}/attachments/0/download", json={"expires_in": -5})
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_request"


def test_another_agents_key_sees_nothing(daemon: Daemon, alice: dict[str, Any],
                                         bob: dict[str, Any]) -> None:
    msg_id = daemon.send(with_attachment("alice@agents.test", PDF), ["alice@agents.test"])
    daemon.wait_message(alice["api_key"], msg_id)
    with daemon.api(bob["api_key"]) as api:
        for method, path in [
            ("GET", f"/v1/messages/{msg_id}"),
            ("GET", f"/v1/messages/{msg_id}/attachments/0"),
            ("POST", f"/v1/messages/{msg_id}/attachments/0/download"),
            ("POST", f"/v1/messages/{msg_id}/raw/download"),
        ]:
            r = api.request(method, path)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"]["code"] == "not_found", r.text
        listed = api.get("/v1/messages").json()["messages"]
        assert msg_id not in [m["id"] for m in listed]


def test_missing_or_bad_key_is_401(daemon: Daemon, alice: dict[str, Any]) -> None:
    assert httpx.get(f"{daemon.url}/v1/messages").status_code == 401
    r = httpx.get(f"{daemon.url}/v1/messages", headers={"Authorization": "Bearer pr_nope"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    r = httpx.get(f"{daemon.url}/v1/messages", headers={"X-API-Key": alice["api_key"]})
    assert r.status_code == 200


def test_raw_download_is_the_message_as_sent_after_our_received_header(
        daemon: Daemon, alice: dict[str, Any]) -> None:
    msg = plain("alice@agents.test")
    sent = msg.as_bytes().replace(b"\n", b"\r\n")
    msg_id = daemon.send(sent, ["alice@agents.test"])
    with daemon.api(alice["api_key"]) as api:
        link = api.post(f"/v1/messages/{msg_id}/raw/download").json()
    raw = httpx.get(link["url"]).content
    assert raw.startswith(b"Received: from client.example")
    assert f"id {msg_id}".encode() in raw.split(b"\r\n\r\n", 1)[0]
    header_end = raw.index(b"\r\n", raw.index(b"; ", raw.index(msg_id.encode()))) + 2
    assert raw[header_end:] == sent
    assert link["sha256"] == hashlib.sha256(raw).hexdigest()


def test_listing_pages_with_a_cursor_newest_last(daemon: Daemon) -> None:
    carol = daemon.add_agent("carol", "carol@agents.test")
    ids = [daemon.send(plain("carol@agents.test", subject=f"n{i}"), ["carol@agents.test"])
           for i in range(5)]
    assert daemon.message_ids(carol["api_key"], page=2) == ids


def test_listing_counts_messages_not_recipients(daemon: Daemon) -> None:
    frank = daemon.add_agent("frank", "frank@agents.test")
    rcpts = ["frank@agents.test"] + [f"frank+t{i}@agents.test" for i in range(6)]
    ids = [daemon.send(plain("frank@agents.test"), rcpts) for _ in range(3)]
    with daemon.api(frank["api_key"]) as api:
        page = api.get("/v1/messages", params={"limit": 2}).json()
        assert [m["id"] for m in page["messages"]] == ids[:2] and page["has_more"] is True
        assert len(page["messages"][0]["recipients"]) == 7
        rest = api.get("/v1/messages", params={"limit": 2, "after": page["next_cursor"]}).json()
        assert [m["id"] for m in rest["messages"]] == ids[2:] and rest["has_more"] is False
        bad = api.get("/v1/messages", params={"after": "not-a-cursor"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"


def test_plus_tag_and_catch_all_reach_their_agents(daemon: Daemon, alice: dict[str, Any],
                                                   bob: dict[str, Any]) -> None:
    tagged = daemon.send(plain("alice+invoices@agents.test"), ["Alice+Invoices@Agents.Test"])
    m = daemon.wait_message(alice["api_key"], tagged)
    assert m["tag"] == "invoices"
    caught = daemon.send(plain("anyone@bob.test"), ["anyone@bob.test"])
    assert daemon.wait_message(bob["api_key"], caught)["status"] == "ready"


def test_message_to_two_agents_is_seen_by_both(daemon: Daemon, alice: dict[str, Any],
                                               bob: dict[str, Any]) -> None:
    msg_id = daemon.send(plain("alice@agents.test"), ["alice@agents.test", "bob@agents.test"])
    assert daemon.wait_message(alice["api_key"], msg_id)["recipients"] == ["alice@agents.test"]
    assert daemon.wait_message(bob["api_key"], msg_id)["recipients"] == ["bob@agents.test"]


def test_health_readiness_and_openapi(daemon: Daemon) -> None:
    assert httpx.get(f"{daemon.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{daemon.url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok",
                                                                   "storage": "ok"}
    spec = httpx.get(f"{daemon.url}/openapi.json").json()
    for path in ["/v1/messages", "/v1/messages/{message_id}",
                 "/v1/messages/{message_id}/attachments/{index}",
                 "/v1/messages/{message_id}/attachments/{index}/download",
                 "/v1/messages/{message_id}/raw/download"]:
        assert path in spec["paths"], path


def test_head_on_a_signed_url_answers_like_get(daemon: Daemon, alice: dict[str, Any]) -> None:
    msg_id = daemon.send(with_attachment("alice@agents.test", PDF), ["alice@agents.test"])
    daemon.wait_message(alice["api_key"], msg_id)
    with daemon.api(alice["api_key"]) as api:
        url = api.post(f"/v1/messages/{msg_id}/attachments/0/download").json()["url"]
    head = httpx.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(PDF)
    assert httpx.head(url.replace("sig=", "sig=x")).status_code == 403
