"""The seeds' surfaces on the real daemon (SPEC §17): AgentPost's `/api/v1` and AgentSend's root
routes, their inboxes, sizes and sends, on the local store and on S3. The seed snippets
themselves run in tests/seeds/; this module checks what the snippets do not show."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.harness import Daemon, running_daemon
from tests.mail import with_attachment
from tests.s3server import MotoServer

CAP = 256 * 1024  # uploads.max_bytes here: the 413s are cheap to cross


@pytest.fixture(scope="module", params=["local", "s3"])
def d(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
      ) -> Iterator[Daemon]:
    extra = f"[uploads]\nmax_bytes = {CAP}\n"
    if request.param == "s3":
        s3: MotoServer = request.getfixturevalue("s3_server")
        extra += (f'[storage]\nbackend = "s3"\nbucket = "{s3.new_bucket()}"\n'
                  f'endpoint_url = "{s3.endpoint_url}"\nregion = "us-east-1"\n')
    with running_daemon(tmp_path_factory.mktemp(f"compat-{request.param}"), extra=extra) as daemon:
        yield daemon


def _wait(predicate: Any, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _agent(d: Daemon, *addresses: str) -> tuple[str, httpx.Client]:
    info = d.add_agent(f"a{os.urandom(4).hex()}", *addresses)
    return info["api_key"], d.api(info["api_key"])


def _inboxes(api: httpx.Client, path: str = "/api/v1/inboxes") -> dict[str, str]:
    r = api.get(path)
    assert r.status_code == 200, r.text
    return {i["address"]: i["id"] for i in r.json()["inboxes"]}


def _arrived(api: httpx.Client, subject: str) -> dict[str, Any]:
    """The inbound message with `subject`, once extracted."""
    def ready() -> dict[str, Any] | None:
        for m in api.get("/v1/messages").json()["messages"]:
            if m["subject"] == subject and m["direction"] == "inbound" \
                    and m["status"] in ("ready", "partial"):
                return dict(api.get(f"/v1/messages/{m['id']}").json())
        return None
    return dict(_wait(ready))


def _bytes_of(api: httpx.Client, message_id: str, index: int) -> bytes:
    link = api.post(f"/v1/messages/{message_id}/attachments/{index}/download")
    assert link.status_code == 200, link.text
    return httpx.get(link.json()["url"]).content


def test_inboxes_are_the_agents_addresses_with_one_id_on_both_surfaces(d: Daemon) -> None:
    _, api = _agent(d, "ann@c.test", "*@ann.test")
    _, other = _agent(d, "olga@c.test")
    with api, other:
        post, send = _inboxes(api), _inboxes(api, "/inboxes")
        assert post == send
        assert set(post) == {"ann@c.test", "*@ann.test"}
        assert all(i.startswith("inb_") for i in post.values())
        mine = post["ann@c.test"]
        assert api.get(f"/api/v1/inboxes/{mine}").json() == {"id": mine,
                                                             "address": "ann@c.test"}
        # Another agent's inbox is 404 exactly as one that does not exist, on every route.
        for path in (f"/api/v1/inboxes/{mine}", f"/api/v1/inboxes/{mine}/messages",
                     f"/inboxes/{mine}/messages", "/api/v1/inboxes/inb_nothing/messages"):
            r = other.get(path)
            assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), path
        r = other.post(f"/api/v1/inboxes/{mine}/messages", json={"to": ["x@c.test"]})
        assert r.status_code == 404
        r = other.post(f"/inboxes/{mine}/messages", json={"to": ["x@c.test"]})
        assert r.status_code == 404
        assert httpx.get(f"{d.url}/inboxes").status_code == 401


def test_an_inbox_lists_its_own_mail_with_has_attachments(d: Daemon) -> None:
    key, api = _agent(d, "bea@c.test", "*@bea.test")
    with api:
        ids = _inboxes(api)
        plain = d.send(with_attachment("bea@c.test", b"%PDF-1.4 one"), ["bea@c.test"])
        tagged = d.send(with_attachment("bea+news@c.test", b"%PDF-1.4 two"),
                        ["bea+news@c.test"])
        caught = d.send(with_attachment("x@bea.test", b"%PDF-1.4 three"), ["x@bea.test"])
        for m in (plain, tagged, caught):
            d.wait_message(key, m)
        page = api.get(f"/api/v1/inboxes/{ids['bea@c.test']}/messages").json()
        assert [m["id"] for m in page["messages"]] == [plain, tagged]
        assert all(m["has_attachments"] for m in page["messages"])
        caught_page = api.get(f"/inboxes/{ids['*@bea.test']}/messages").json()
        assert [m["id"] for m in caught_page["messages"]] == [caught]
        assert caught_page["messages"][0]["hasAttachments"] is True
        assert set(caught_page) == {"messages", "nextCursor", "hasMore"}
        # Pages: one at a time, resumed from the cursor.
        first = api.get(f"/api/v1/inboxes/{ids['bea@c.test']}/messages",
                        params={"limit": 1}).json()
        assert ([m["id"] for m in first["messages"]], first["has_more"]) == ([plain], True)
        rest = api.get(f"/api/v1/inboxes/{ids['bea@c.test']}/messages",
                       params={"after": first["next_cursor"]}).json()
        assert [m["id"] for m in rest["messages"]] == [tagged]
        # A catch-all has no address to send from.
        r = api.post(f"/api/v1/inboxes/{ids['*@bea.test']}/messages",
                     json={"to": ["bea@c.test"], "subject": "s", "text_body": "t"})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


def test_agentpost_upload_url_put_and_send_to_a_local_agent(d: Daemon) -> None:
    payload = os.urandom(50_000)
    _, api = _agent(d, "cai@c.test")
    _, rapi = _agent(d, "cfo@c.test")
    with api, rapi:
        r = api.post("/api/v1/attachments/upload-url", json={
            "filename": "q1.pdf", "mime_type": "application/pdf", "size": len(payload)})
        assert r.status_code == 200, r.text
        upload = r.json()
        assert set(upload) == {"upload_url", "key", "id", "expires_at"}
        pending = api.get(f"/api/v1/attachments/{upload['id']}").json()
        assert (pending["status"], pending["download_url"]) == ("pending", None)
        put = httpx.put(upload["upload_url"], content=payload,
                        headers={"Content-Type": "application/pdf"})
        assert put.status_code == 200, put.text
        got = api.get(f"/api/v1/attachments/{upload['id']}").json()
        assert (got["filename"], got["mime_type"], got["size"], got["message_id"]) == (
            "q1.pdf", "application/pdf", len(payload), None)
        assert httpx.get(got["download_url"]).content == payload
        inbox = _inboxes(api)["cai@c.test"]
        sent = api.post(f"/api/v1/inboxes/{inbox}/messages", json={
            "to": [{"email": "cfo@c.test", "name": "CFO"}], "subject": "Q1 post",
            "text_body": "attached " * 10_000,
            "attachments": [{"key": upload["key"], "filename": "report.pdf",
                             "mime_type": "application/pdf"}]})
        assert sent.status_code == 202, sent.text
        answer = sent.json()
        assert (answer["inbox_id"], answer["direction"]) == (inbox, "outbound")
        assert answer["id"] in [m["id"] for m in api.get(
            f"/api/v1/inboxes/{inbox}/messages").json()["messages"]]
        got_msg = _arrived(rapi, "Q1 post")
        assert got_msg["attachments"][0]["file_name"] == "report.pdf"
        assert _bytes_of(rapi, got_msg["id"], 0) == payload
        # The inbound attachment through AgentPost: its message and a download URL.
        att = rapi.get(f"/api/v1/attachments/{got_msg['attachments'][0]['id']}").json()
        assert (att["message_id"], att["mime_type"]) == (got_msg["id"], "application/pdf")
        assert hashlib.sha256(httpx.get(att["download_url"]).content).hexdigest() == \
            hashlib.sha256(payload).hexdigest()
        assert api.get(f"/api/v1/attachments/{att['id']}").status_code == 404


def test_agentpost_sizes_are_enforced(d: Daemon) -> None:
    _, api = _agent(d, "dee@c.test")
    with api:
        r = api.post("/api/v1/attachments/upload-url", json={
            "filename": "big.bin", "mime_type": "application/octet-stream", "size": CAP + 1})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large")
        upload = api.post("/api/v1/attachments/upload-url", json={
            "filename": "small.bin", "mime_type": "application/octet-stream",
            "size": 10}).json()
        query = parse_qs(urlsplit(upload["upload_url"]).query)
        if "X-Amz-SignedHeaders" in query:
            # S3 refuses a PUT whose Content-Length is not the signed one; moto's server checks
            # no signature and stores it, and postroom does not take bytes of another length.
            assert "content-length" in query["X-Amz-SignedHeaders"][0].split(";")
            more = httpx.put(upload["upload_url"], content=b"x" * 11,
                             headers={"Content-Type": "application/octet-stream"})
            assert more.status_code == 200
            seen = api.get(f"/api/v1/attachments/{upload['id']}").json()
            assert (seen["status"], seen["size"], seen["download_url"]) == ("pending", 10, None)
            right = httpx.put(upload["upload_url"], content=b"y" * 10,
                              headers={"Content-Type": "application/octet-stream"})
            assert right.status_code == 200
            seen = api.get(f"/api/v1/attachments/{upload['id']}").json()
            assert (seen["status"], seen["size"]) == ("ready", 10)
            assert httpx.get(seen["download_url"]).content == b"y" * 10
        else:
            more = httpx.put(upload["upload_url"], content=b"x" * 11,
                             headers={"Content-Type": "application/octet-stream"})
            assert (more.status_code, more.json()["error"]["code"]) == (400, "size_mismatch")
            assert api.get(f"/api/v1/attachments/{upload['id']}").json()["status"] == \
                "pending"
        # upload-url is the POST route's; any other method there is 405, not a lookup.
        r = api.get("/api/v1/attachments/upload-url")
        assert (r.status_code, r.headers["allow"]) == (405, "POST")


def test_agentsend_attachments_and_send_with_attachment_ids(d: Daemon) -> None:
    payload = b"%PDF-1.4\n" + os.urandom(200_000)  # over http.max_body, under the cap
    long_text = "plain text, " * 10_000  # so is the body of the mail
    key = d.add_agent("eve-send", "eve@c.test")["api_key"]
    rkey, rapi = _agent(d, "fay@c.test")
    with httpx.Client(base_url=d.url, headers={"x-api-key": key}, timeout=30) as api, rapi:
        up = api.post("/attachments", files={"file": ("report.pdf", payload,
                                                      "application/pdf")})
        assert up.status_code == 201, up.text
        att = up.json()
        assert {"id", "filename", "contentType", "size", "url", "createdAt"} <= set(att)
        assert (att["filename"], att["contentType"], att["size"]) == (
            "report.pdf", "application/pdf", len(payload))
        assert httpx.get(att["url"]).content == payload
        again = api.get(f"/attachments/{att['id']}").json()
        assert again["id"] == att["id"] and httpx.get(again["url"]).content == payload
        big = api.post("/attachments", files={"file": ("big.bin", b"x" * (CAP + 1))})
        assert (big.status_code, big.json()["error"]["code"]) == (413, "too_large")
        inbox = _inboxes(api, "/inboxes")["eve@c.test"]
        sent = api.post(f"/inboxes/{inbox}/messages", json={
            "to": ["fay@c.test"], "subject": "AS one", "bodyText": long_text,
            "bodyHtml": "<p>html</p>", "attachmentIds": [att["id"]]})
        assert sent.status_code == 202, sent.text
        answer = sent.json()
        assert {"id", "inboxId", "threadId", "status", "messageIdHeader",
                "recipients"} <= set(answer)
        assert answer["inboxId"] == inbox
        first = _arrived(rapi, "AS one")
        assert (first["text"] or "").strip() == long_text.strip()
        assert _bytes_of(rapi, first["id"], 0) == payload
        assert first["thread_id"] == answer["threadId"]
        # fay answers in the thread by its id; eve's copy and the reply share it.
        fay_inbox = _inboxes(rapi, "/inboxes")["fay@c.test"]
        with httpx.Client(base_url=d.url, headers={"x-api-key": rkey}, timeout=30) as fay:
            reply = fay.post(f"/inboxes/{fay_inbox}/messages", json={
                "to": ["eve@c.test"], "subject": "Re: AS one", "bodyText": "thanks",
                "threadId": answer["threadId"]})
            assert reply.status_code == 202, reply.text
            assert reply.json()["threadId"] == answer["threadId"]
            unknown = fay.post(f"/inboxes/{fay_inbox}/messages", json={
                "to": ["eve@c.test"], "threadId": "thr_nothing"})
            assert unknown.status_code == 404
        back = _arrived(api, "Re: AS one")
        assert back["thread_id"] == answer["threadId"]
        assert back["in_reply_to"] == answer["messageIdHeader"]
        listed = api.get(f"/inboxes/{inbox}/messages").json()["messages"]
        assert {m["threadId"] for m in listed} == {answer["threadId"]}


def test_compat_routes_are_documented_under_their_own_tags(d: Daemon) -> None:
    doc = httpx.get(f"{d.url}/openapi.json").json()
    tagged: dict[str, set[str]] = {}
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            tagged.setdefault(op["tags"][0], set()).add(f"{method.upper()} {path}")
            if path.startswith(("/api/v1/", "/attachments", "/inboxes")):
                assert op["security"] == [{"bearer": []}, {"apiKey": []}], path
    assert tagged["agentpost"] == {
        "POST /api/v1/attachments/upload-url", "GET /api/v1/attachments/{attachment_id}",
        "GET /api/v1/inboxes", "GET /api/v1/inboxes/{inbox_id}",
        "GET /api/v1/inboxes/{inbox_id}/messages", "POST /api/v1/inboxes/{inbox_id}/messages"}
    assert tagged["agentsend"] == {
        "POST /attachments", "GET /attachments/{attachment_id}", "GET /inboxes",
        "GET /inboxes/{inbox_id}/messages", "POST /inboxes/{inbox_id}/messages"}
