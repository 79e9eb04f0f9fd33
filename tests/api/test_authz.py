"""Who may do what (issue 9 item 4), through the real daemon on the local store.

Every `/v1` operation the daemon's own `/openapi.json` lists is in one matrix (a new endpoint
fails the first test until it is added here). Agent B's key on agent A's messages,
attachments, uploads and events answers exactly what a nonexistent id answers (403 for upload
object keys); every bad credential answers 401 with the API's error body. The local store's
signed URLs refuse every change to what was signed. Keys are only ever compared as SHA-256
digests, and no key, key prefix or key hash reaches a log line or a database row.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import functools
import hashlib
import inspect
import json
import re
import secrets
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests import figures
from tests.harness import Daemon, running_daemon

FAKE_MESSAGE = "msg_" + "0" * 26
FAKE_ATTACHMENT = "att_" + "0" * 26
FAKE_UPLOAD = "upl_" + "0" * 26
HOOK_URL = "http://127.0.0.1:9/authz"  # a closed port: deliveries are refused at once


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """This module's daemon, letting webhooks point at loopback (the matrix creates some)."""
    with running_daemon(tmp_path_factory.mktemp("postroom"),
                        extra="[webhooks]\nallow_private_networks = true\n") as d:
        yield d


def _counted() -> None:
    figures.add("authz cases checked", 1)


def _mail(to: str, *attachments: tuple[str, bytes]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = to
    msg["Subject"] = "authz"
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg.set_content("the body " + secrets.token_hex(8))
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg


@dataclass
class World:
    """Two agents with mail and uploads, and the keys that must no longer work."""

    d: Daemon
    ann: dict[str, Any]
    ben: dict[str, Any]
    msg_a: str
    msg_b: str
    atts_a: list[dict[str, Any]]
    atts_b: list[dict[str, Any]]
    upload_a: dict[str, Any]  # direct upload, ready
    pending_a: dict[str, Any]  # presigned form, nothing sent yet
    hook_a: dict[str, Any]  # ann's webhook (on a closed loopback port: nothing receives)
    doomed_hook_a: dict[str, Any]  # ann's webhook the matrix deletes
    removed_key: str
    rotated_away_key: str
    rotated_new_key: str
    thread_a: str = ""  # msg_a's thread
    keys: list[str] = field(default_factory=list)  # every key this module used

    def as_ann(self) -> httpx.Client:
        return self.d.api(self.ann["api_key"])

    def as_ben(self) -> httpx.Client:
        return self.d.api(self.ben["api_key"])


def _status(d: Daemon, key: str) -> int:
    return httpx.get(f"{d.url}/v1/messages", headers={"X-API-Key": key}).status_code


def _refused(d: Daemon, key: str) -> bool:
    return _status(d, key) == 401


@pytest.fixture(scope="module")
def world(daemon: Daemon) -> World:
    d = daemon
    ann = d.add_agent("ann", "ann@authz.test")
    ben = d.add_agent("ben", "ben@authz.test")
    rot = d.add_agent("rot", "rot@authz.test")
    gone = d.add_agent("gone", "gone@authz.test")
    msg_a = d.send(_mail("ann@authz.test", ("a0.txt", b"ann zero"), ("a1.txt", b"ann one")),
                   ["ann@authz.test"])
    msg_b = d.send(_mail("ben@authz.test", ("b0.bin", b"ben zero")), ["ben@authz.test"])
    view_a = d.wait_message(ann["api_key"], msg_a)
    atts_a = view_a["attachments"]
    atts_b = d.wait_message(ben["api_key"], msg_b)["attachments"]
    assert [a["status"] for a in atts_a + atts_b] == ["ready"] * 3
    with d.api(ann["api_key"]) as api:
        upload_a = api.post("/v1/uploads", files={"file": ("ann.txt", b"ann's upload",
                                                          "text/plain")}).json()
        pending_a = api.post("/v1/uploads/form", json={"file_name": "later.pdf",
                                                        "content_type": "application/pdf",
                                                        "max_bytes": 1000}).json()
        hook_a, doomed_hook_a = (api.post("/v1/webhooks", json={"url": HOOK_URL}).json()
                                 for _ in range(2))
    # Keys in use (so remembered by the daemon) that the CLI then takes away.
    for key in (rot["api_key"], gone["api_key"]):
        for _ in range(5):
            assert _status(d, key) == 200
    rotated = json.loads(d.cli("agent", "rotate-key", "rot", "--json").stdout)
    d.cli("agent", "remove", "gone")
    for key in (rot["api_key"], gone["api_key"]):  # SPEC §7: within 5 s
        d.wait_for(functools.partial(_refused, d, key), 5.0, "a taken-away key refused")
    assert _status(d, rotated["api_key"]) == 200
    return World(d, ann, ben, msg_a, msg_b, atts_a, atts_b, upload_a, pending_a, hook_a,
                 doomed_hook_a, removed_key=gone["api_key"], rotated_away_key=rot["api_key"],
                 rotated_new_key=rotated["api_key"], thread_a=view_a["thread_id"],
                 keys=[ann["api_key"], ben["api_key"], rot["api_key"], gone["api_key"],
                       rotated["api_key"]])


# The matrix: every /v1 operation, with concrete requests on agent A's resources.

Request = dict[str, Any]  # httpx.request keyword arguments: method, url, json, files, params


def _operations(w: World) -> dict[tuple[str, str], list[Request]]:
    mid, att, upl = w.msg_a, w.atts_a[0]["id"], w.upload_a
    hook = f"/v1/webhooks/{w.hook_a['id']}"
    return {
        ("GET", "/v1/messages"): [{"method": "GET", "url": "/v1/messages"}],
        ("GET", "/v1/messages/{message_id}"): [
            {"method": "GET", "url": f"/v1/messages/{mid}"}],
        ("GET", "/v1/messages/{message_id}/attachments/{index}"): [
            {"method": "GET", "url": f"/v1/messages/{mid}/attachments/0"},
            {"method": "GET", "url": f"/v1/messages/{mid}/attachments/0",
             "params": {"wait": "5"}}],
        ("POST", "/v1/messages/{message_id}/attachments/{index}/download"): [
            {"method": "POST", "url": f"/v1/messages/{mid}/attachments/0/download"},
            {"method": "POST", "url": f"/v1/messages/{mid}/attachments/1/download",
             "json": {"expires_in": 60}}],
        ("POST", "/v1/messages/{message_id}/raw/download"): [
            {"method": "POST", "url": f"/v1/messages/{mid}/raw/download"}],
        ("GET", "/v1/messages/{message_id}/attachments/{index}/text"): [
            {"method": "GET", "url": f"/v1/messages/{mid}/attachments/0/text"},
            {"method": "GET", "url": f"/v1/messages/{mid}/attachments/1/text",
             "params": {"wait": "5"}}],
        ("GET", "/v1/threads"): [{"method": "GET", "url": "/v1/threads"}],
        ("GET", "/v1/threads/{thread_id}"): [
            {"method": "GET", "url": f"/v1/threads/{w.thread_a}"}],
        ("GET", "/v1/events"): [
            {"method": "GET", "url": "/v1/events"},
            {"method": "GET", "url": "/v1/events", "params": {"after": "0", "wait": "5"}}],
        ("POST", "/v1/uploads/form"): [
            {"method": "POST", "url": "/v1/uploads/form",
             "json": {"file_name": "x.pdf", "content_type": "application/pdf",
                      "max_bytes": 100}}],
        ("POST", "/v1/uploads/url"): [
            {"method": "POST", "url": "/v1/uploads/url",
             "json": {"file_name": "x.csv", "content_type": "text/csv", "size": 3}}],
        ("POST", "/v1/uploads"): [
            {"method": "POST", "url": "/v1/uploads",
             "files": {"file": ("x.txt", b"direct", "text/plain")}}],
        ("POST", "/v1/uploads/download"): [
            {"method": "POST", "url": "/v1/uploads/download",
             "json": {"object_key": upl["object_key"]}}],
        ("GET", "/v1/attachments/{attachment_id}"): [
            {"method": "GET", "url": f"/v1/attachments/{att}"},
            {"method": "GET", "url": f"/v1/attachments/{upl['id']}"}],
        ("POST", "/v1/messages"): [
            {"method": "POST", "url": "/v1/messages",
             "json": {"to": ["ann@authz.test"], "text": "to myself"}}],
        ("GET", "/v1/directory/{address}"): [
            {"method": "GET", "url": "/v1/directory/ben@authz.test"}],
        ("POST", "/v1/webhooks"): [
            {"method": "POST", "url": "/v1/webhooks", "json": {"url": HOOK_URL}}],
        ("GET", "/v1/webhooks"): [{"method": "GET", "url": "/v1/webhooks"}],
        ("GET", "/v1/webhooks/{webhook_id}"): [{"method": "GET", "url": hook}],
        ("PATCH", "/v1/webhooks/{webhook_id}"): [
            {"method": "PATCH", "url": hook, "json": {"description": "changed"}}],
        ("DELETE", "/v1/webhooks/{webhook_id}"): [
            {"method": "DELETE", "url": f"/v1/webhooks/{w.doomed_hook_a['id']}"}],
        ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): [
            {"method": "POST", "url": f"{hook}/rotate-secret"}],
        ("GET", "/v1/webhooks/{webhook_id}/deliveries"): [
            {"method": "GET", "url": f"{hook}/deliveries"}],
        ("POST", "/v1/webhooks/{webhook_id}/replay"): [
            {"method": "POST", "url": f"{hook}/replay", "json": {"after": "0"}}],
    }


def test_the_matrix_covers_every_v1_operation_of_the_openapi_document(world: World) -> None:
    paths = httpx.get(f"{world.d.url}/openapi.json").json()["paths"]
    listed = {(method.upper(), path) for path, ops in paths.items() if path.startswith("/v1")
              for method in ops if method in ("get", "post", "put", "patch", "delete")}
    assert listed == set(_operations(world)), "a /v1 operation is missing from the matrix"
    _counted()


def _credentials(w: World) -> dict[str, dict[str, str]]:
    """Every way of not being an agent; each must answer 401."""
    real, other = w.ann["api_key"], w.ben["api_key"]
    guess = "pr_" + secrets.token_urlsafe(32)
    return {
        "no key": {},
        "bearer without a key": {"Authorization": "Bearer"},
        "real key with a blank inside": {"Authorization": f"Bearer {real[:9]} {real[9:]}"},
        "two bearer schemes": {"Authorization": f"Bearer Bearer {real}"},
        "malformed header": {"Authorization": "garbage"},
        "key without a scheme": {"Authorization": real},
        "basic scheme": {"Authorization": "Basic " + base64.b64encode(
            f"ann:{real}".encode()).decode()},
        "basic scheme with the bare key": {"Authorization": f"Basic {real}"},
        "token scheme": {"Authorization": f"Token {real}"},
        "empty X-API-Key": {"X-API-Key": ""},
        "guessed key": {"Authorization": f"Bearer {guess}"},
        "guessed key as X-API-Key": {"X-API-Key": guess},
        "real key one character off": {"Authorization": f"Bearer {real[:-1]}"
                                                         f"{'A' if real[-1] != 'A' else 'B'}"},
        "real key cut short": {"Authorization": f"Bearer {real[:-1]}"},
        "real key with a suffix": {"Authorization": f"Bearer {real}x"},
        "real key in another case": {"Authorization": f"Bearer {real.upper()}"},
        "removed agent's key": {"Authorization": f"Bearer {w.removed_key}"},
        "removed agent's key as X-API-Key": {"X-API-Key": w.removed_key},
        "rotated-away key": {"Authorization": f"Bearer {w.rotated_away_key}"},
        "rotated-away key as X-API-Key": {"X-API-Key": w.rotated_away_key},
        "both headers, two agents": {"Authorization": f"Bearer {real}", "X-API-Key": other},
        "both headers, good bearer and a bad X-API-Key": {"Authorization": f"Bearer {real}",
                                                          "X-API-Key": guess},
        "both headers, bad bearer and a good X-API-Key": {"Authorization": f"Bearer {guess}",
                                                          "X-API-Key": real},
    }


def _send(client: httpx.Client, req: Request, headers: dict[str, str],
          timeout: float | None = None) -> httpx.Response:
    return client.request(req["method"], req["url"], params=req.get("params"),
                          json=req.get("json"), files=req.get("files"), headers=headers,
                          timeout=timeout if timeout is not None else client.timeout)


def _is_error(r: httpx.Response, status: int, code: str | None = None) -> bool:
    if r.status_code != status or not r.headers.get("content-type", "").startswith(
            "application/json"):
        return False
    body = r.json()
    return (set(body) == {"error"} and set(body["error"]) == {"code", "message"}
            and isinstance(body["error"]["message"], str)
            and (code is None or body["error"]["code"] == code))


def test_every_operation_refuses_every_bad_credential_with_401(world: World) -> None:
    creds = _credentials(world)
    with httpx.Client(base_url=world.d.url, timeout=40) as client:
        for op, requests in _operations(world).items():
            for req in requests:
                good = _send(client, req, {"Authorization": f"Bearer {world.ann['api_key']}"})
                assert good.status_code in (200, 201, 202, 204), (op, good.status_code, good.text)
                also = _send(client, req, {"X-API-Key": world.ann["api_key"],
                                           "Authorization": f"bearer {world.ann['api_key']}"})
                gone = req["method"] == "DELETE" and also.status_code == 404  # deleted above
                assert also.status_code in (200, 201, 202, 204) or gone, (
                    op, also.status_code, also.text)
                _counted()
                for name, headers in creds.items():
                    r = _send(client, req, headers)
                    assert _is_error(r, 401, "unauthorized"), (op, name, r.status_code, r.text)
                    _counted()


# Agent B's key on agent A's things: exactly what a nonexistent id gets.


def _answer(r: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    return r.status_code, r.content, sorted((k, v) for k, v in r.headers.items() if k != "date")


def _same_as_missing(client: httpx.Client, req: Request, missing: Request, status: int = 404
                     ) -> None:
    # A ?wait must not wait on what is not yours: held past 3 s, the request times out.
    theirs = _send(client, req, {}, timeout=3)
    nothing = _send(client, missing, {})
    assert _is_error(theirs, status), (req, theirs.status_code, theirs.text)
    assert _answer(theirs) == _answer(nothing), (req, theirs.text, nothing.text)
    _counted()


def test_another_agents_messages_and_attachments_answer_as_missing_ones(world: World) -> None:
    mid = world.msg_a
    with world.as_ben() as ben:
        for tail, params, body in [
            ("", None, None),
            ("/attachments/0", None, None),
            ("/attachments/1", {"wait": "5"}, None),
            ("/attachments/99", None, None),  # no such index, on a message ben cannot see
            ("/attachments/99", {"wait": "5"}, None),
            ("/attachments/0/download", None, None),
            ("/attachments/1/download", None, {"expires_in": 60}),
            ("/raw/download", None, None),
            ("/raw/download", None, {"expires_in": 60}),
            ("/attachments/0/text", None, None),
            ("/attachments/1/text", {"wait": "5"}, None),
            ("/attachments/99/text", {"wait": "5"}, None),
        ]:
            method = "POST" if tail.endswith("download") else "GET"
            req = {"method": method, "url": f"/v1/messages/{mid}{tail}", "params": params,
                   "json": body}
            missing = {**req, "url": f"/v1/messages/{FAKE_MESSAGE}{tail}"}
            _same_as_missing(ben, req, missing)
        # A's thread: as one that does not exist; ann's words are not found by ben.
        _same_as_missing(ben, {"method": "GET", "url": f"/v1/threads/{world.thread_a}"},
                         {"method": "GET", "url": f"/v1/threads/thr_{'0' * 26}"})
        assert world.thread_a not in ben.get("/v1/threads").text
        assert ben.get("/v1/messages", params={"q": "ann"}).json()["messages"] == []
        # A's own message ids, guessed by A on the nonexistent side too: the same answers.
        for att in world.atts_a:
            _same_as_missing(ben, {"method": "GET", "url": f"/v1/attachments/{att['id']}"},
                             {"method": "GET", "url": f"/v1/attachments/{FAKE_ATTACHMENT}"})
        for upl in (world.upload_a, world.pending_a):
            _same_as_missing(ben, {"method": "GET", "url": f"/v1/attachments/{upl['id']}"},
                             {"method": "GET", "url": f"/v1/attachments/{FAKE_UPLOAD}"})
    # And ann sees them all (the 404s above are about ben, not about the ids).
    with world.as_ann() as ann:
        assert ann.get(f"/v1/messages/{mid}").status_code == 200
        for att in world.atts_a:
            assert ann.get(f"/v1/attachments/{att['id']}").status_code == 200
        assert ann.get(f"/v1/attachments/{world.upload_a['id']}").status_code == 200
    _counted()


def test_another_agents_webhooks_answer_as_missing_ones(world: World) -> None:
    theirs = world.hook_a["id"]
    with world.as_ben() as ben:
        for method, tail, body in [("GET", "", None), ("PATCH", "", {"description": "mine"}),
                                   ("DELETE", "", None), ("POST", "/rotate-secret", None),
                                   ("GET", "/deliveries", None),
                                   ("POST", "/replay", {"after": "0"})]:
            req = {"method": method, "url": f"/v1/webhooks/{theirs}{tail}", "json": body}
            _same_as_missing(ben, req, {**req, "url": f"/v1/webhooks/wh_{'0' * 26}{tail}"})
        assert theirs not in ben.get("/v1/webhooks").text
    with world.as_ann() as ann:  # still there, unchanged
        assert ann.get(f"/v1/webhooks/{theirs}").json()["description"] != "mine"


def test_another_agents_upload_keys_are_403_whether_or_not_they_exist(world: World) -> None:
    ann_prefix = f"uploads/{world.ann['id']}/"
    with world.as_ben() as ben:
        for key in (world.upload_a["object_key"], world.pending_a["object_key"],
                    f"{ann_prefix}{'0' * 32}-nothing.txt", f"raw/{world.msg_a}.eml",
                    f"inbound/{world.msg_a}/0", f"inbound/{world.msg_b}/0"):
            for body in ({"object_key": key}, {"object_key": key, "expires_in": 60}):
                r = ben.post("/v1/uploads/download", json=body)
                assert _is_error(r, 403, "forbidden"), (key, r.status_code, r.text)
                assert _answer(r) == _answer(ben.post(
                    "/v1/uploads/download", json={**body, "object_key": f"{ann_prefix}x"}))
                _counted()


def test_another_agent_never_lists_or_hears_of_anothers_things(world: World) -> None:
    d = world.d
    ann_ids = {world.msg_a, world.upload_a["id"], world.pending_a["id"],
               *(a["id"] for a in world.atts_a)}
    listed = d.message_ids(world.ben["api_key"], page=1)
    assert world.msg_b in listed and world.msg_a not in listed
    _counted()
    with world.as_ben() as ben:
        events, after = [], "0"
        while True:
            page = ben.get("/v1/events", params={"after": after, "limit": 2}).json()
            events += page["events"]
            after = page["next_cursor"]
            if not page["has_more"]:
                break
    assert any(e["message_id"] == world.msg_b for e in events)
    mentioned = {e.get(k) for e in events for k in ("message_id", "attachment_id")}
    assert not mentioned & ann_ids, mentioned & ann_ids
    _counted()
    with world.as_ann() as ann:  # the events are there, for their own agent
        own = ann.get("/v1/events", params={"limit": 500}).json()["events"]
    assert {e["message_id"] for e in own} >= {world.msg_a}
    _counted()


def test_new_uploads_land_under_the_callers_own_prefix(world: World) -> None:
    ben_prefix = f"uploads/{world.ben['id']}/"
    with world.as_ben() as ben:
        form = ben.post("/v1/uploads/form", json={"file_name": "b.pdf",
                                                  "content_type": "application/pdf"}).json()
        url = ben.post("/v1/uploads/url", json={"file_name": "b.csv", "content_type": "text/csv",
                                                "size": 3}).json()
        direct = ben.post("/v1/uploads", files={"file": ("b.txt", b"ben", "text/plain")}).json()
    for key in (form["object_key"], form["upload"]["key"], url["object_key"],
                direct["object_key"], urlsplit(url["upload_url"]).path.removeprefix("/objects/")):
        assert key.startswith(ben_prefix), key
        _counted()


# The local store's signed URLs (served by the daemon under /objects/).


def _split(url: str) -> tuple[str, str, dict[str, str]]:
    parts = urlsplit(url)
    return (f"{parts.scheme}://{parts.netloc}", parts.path,
            {k: v[0] for k, v in parse_qs(parts.query).items()})


def _download_url(client: httpx.Client, path: str, **body: Any) -> str:
    r = client.post(path, json=body or None)
    assert r.status_code == 200, r.text
    return str(r.json()["url"])


def _signed_urls(w: World) -> dict[str, str]:
    """One fresh download URL per kind of object: attachment, body-less raw, upload, B's."""
    with w.as_ann() as ann:
        urls = {
            "attachment 0": _download_url(ann, f"/v1/messages/{w.msg_a}/attachments/0/download"),
            "attachment 1": _download_url(ann, f"/v1/messages/{w.msg_a}/attachments/1/download"),
            "raw": _download_url(ann, f"/v1/messages/{w.msg_a}/raw/download"),
            "upload": _download_url(ann, "/v1/uploads/download",
                                    object_key=w.upload_a["object_key"]),
        }
    with w.as_ben() as ben:
        urls["ben's attachment"] = _download_url(
            ben, f"/v1/messages/{w.msg_b}/attachments/0/download")
    return urls


def _flip(text: str, at: int = -1) -> str:
    chars = list(text)
    chars[at] = "A" if chars[at] != "A" else "B"
    return "".join(chars)


def _forbidden(r: httpx.Response) -> bool:
    return _is_error(r, 403, "forbidden")


def test_download_urls_refuse_every_change_to_what_was_signed(world: World) -> None:
    fn_html = base64.urlsafe_b64encode(b"evil.html").rstrip(b"=").decode()
    for name, url in _signed_urls(world).items():
        base, path, q = _split(url)
        assert httpx.get(url).status_code == 200, name  # the URL as signed works
        exp = int(q["exp"])
        changes: dict[str, tuple[str, dict[str, str]]] = {
            "last signature character": (path, {**q, "sig": _flip(q["sig"])}),
            "first signature character": (path, {**q, "sig": _flip(q["sig"], 0)}),
            "signature cut short": (path, {**q, "sig": q["sig"][:-1]}),
            "empty signature": (path, {**q, "sig": ""}),
            "no signature": (path, {k: v for k, v in q.items() if k != "sig"}),
            "expiry later": (path, {**q, "exp": str(exp + 1)}),
            "expiry earlier": (path, {**q, "exp": str(exp - 1)}),
            "expiry far away": (path, {**q, "exp": str(exp + 10**8)}),
            "expiry not a number": (path, {**q, "exp": "soon"}),
            "no expiry": (path, {k: v for k, v in q.items() if k != "exp"}),
            "file name": (path, {**q, "fn": fn_html}),
            "file name not base64": (path, {**q, "fn": "%%%"}),
            "no file name": (path, {k: v for k, v in q.items() if k != "fn"}),
            "content type": (path, {**q, "ct": "text/html"}),
            "no content type": (path, {k: v for k, v in q.items() if k != "ct"}),
            "key: a character more": (path + "x", q),
            "key: a character less": (path[:-1], q),
            "key: upper case": (path.upper().replace("/OBJECTS/", "/objects/"), q),
            # Dot segments escaped, so the client sends them as they are.
            "key: climbing out": (path.replace("/objects/", "/objects/x/%2E%2E/"), q),
        }
        for change, (p, params) in changes.items():
            for method in ("GET", "HEAD"):
                r = httpx.request(method, f"{base}{p}?{urlencode(params)}")
                if method == "HEAD":
                    ok = r.status_code in (403, 404) and not r.content
                else:
                    ok = _forbidden(r) or (change == "key: climbing out"
                                           and _is_error(r, 404))
                assert ok, (name, change, method, r.status_code, r.text)
                _counted()


def test_a_download_url_moved_onto_another_object_is_403(world: World) -> None:
    urls = _signed_urls(world)
    split = {name: _split(url) for name, url in urls.items()}
    for name, (base, _, query) in split.items():
        for other, (_, other_path, _) in split.items():
            if other == name:
                continue
            r = httpx.get(f"{base}{other_path}?{urlencode(query)}")
            assert _forbidden(r), (name, "onto", other, r.status_code, r.text)
            _counted()
    # A body object ann can only ever reach through GET /v1/messages/{id}, never by URL.
    base, _, query = split["attachment 0"]
    r = httpx.get(f"{base}/objects/inbound/{world.msg_a}/body.txt?{urlencode(query)}")
    assert _forbidden(r)
    _counted()


def test_an_expired_download_url_is_403(world: World) -> None:
    with world.as_ann() as ann:
        url = _download_url(ann, f"/v1/messages/{world.msg_a}/attachments/0/download",
                            expires_in=1)
    exp = int(_split(url)[2]["exp"])
    r = world.d.wait_for(lambda: (r := httpx.get(url)).status_code == 403 and r, 10.0,
                         "the URL to expire")
    assert time.time() >= exp, "refused before its expiry"
    assert _forbidden(r)
    _counted()


def _put(url: str, data: bytes, content_type: str = "text/csv") -> httpx.Response:
    return httpx.put(url, content=data, headers={"Content-Type": content_type})


def test_upload_urls_and_forms_refuse_every_change_to_what_was_signed(world: World) -> None:
    with world.as_ben() as ben:
        put = ben.post("/v1/uploads/url", json={"file_name": "b.csv", "content_type": "text/csv",
                                                "size": 3}).json()
        soon = ben.post("/v1/uploads/url", json={"file_name": "s.csv", "content_type": "text/csv",
                                                 "size": 3, "expires_in": 1}).json()
        form = ben.post("/v1/uploads/form", json={"file_name": "b.pdf", "max_bytes": 100,
                                                  "content_type": "application/pdf"}).json()
    base, path, q = _split(put["upload_url"])
    ann_key = world.pending_a["object_key"]
    changes = {
        "signature": (path, {**q, "sig": _flip(q["sig"])}),
        "expiry": (path, {**q, "exp": str(int(q["exp"]) + 1)}),
        "content type": (path, {**q, "ct": "text/html"}),
        "no signature": (path, {k: v for k, v in q.items() if k != "sig"}),
        "onto ann's pending key": (f"/objects/{ann_key}", q),
        "onto ann's ready upload": (f"/objects/{world.upload_a['object_key']}", q),
        "onto a message": (f"/objects/raw/{world.msg_a}.eml", q),
    }
    for change, (p, params) in changes.items():
        ct = params.get("ct", "text/csv")
        r = _put(f"{base}{p}?{urlencode(params)}", b"abc", ct)
        assert _forbidden(r), (change, r.status_code, r.text)
        _counted()
    exp = int(_split(soon["upload_url"])[2]["exp"])
    world.d.wait_for(lambda: time.time() > exp, 5.0, "the PUT URL's expiry")
    assert _forbidden(_put(soon["upload_url"], b"abc"))
    _counted()

    fields = {k: v for k, v in form["upload"].items() if k != "url"}
    doc = json.loads(base64.b64decode(fields["policy"]))
    doc["conditions"] = [{"key": ann_key}, {"Content-Type": "application/pdf"},
                         ["content-length-range", 0, 100]]
    forged = base64.b64encode(json.dumps(doc).encode()).decode()
    form_changes = {
        "signature": {**fields, "signature": _flip(fields["signature"])},
        "key: ann's pending key": {**fields, "key": ann_key},
        "key: ann's ready upload": {**fields, "key": world.upload_a["object_key"]},
        "policy rewritten for ann's key": {**fields, "key": ann_key, "policy": forged},
        "content type": {**fields, "Content-Type": "text/html"},
        "no signature": {k: v for k, v in fields.items() if k != "signature"},
    }
    for change, data in form_changes.items():
        r = httpx.post(form["upload"]["url"], data=data,
                       files={"file": ("f.pdf", b"%PDF-1.4 forged", "application/pdf")})
        assert _forbidden(r), (change, r.status_code, r.text)
        _counted()
    # Ann's objects are untouched: her pending upload is still pending, her file still hers.
    with world.as_ann() as ann:
        assert ann.get(f"/v1/attachments/{world.pending_a['id']}").json()["status"] == "pending"
        url = _download_url(ann, "/v1/uploads/download",
                            object_key=world.upload_a["object_key"])
    assert httpx.get(url).content == b"ann's upload"
    _counted()


# Keys: compared only as digests, never logged, never stored.


_SECRET_NAME = re.compile(r"api_key|key_hash|secret|password|(^|_)sig$|(^|_)mac$", re.I)
# The one comparison allowed: the SQL that finds an agent by its key's hash.
_ALLOWED = {("daemon/api/lookups.py", "_agents.c.key_hash == bindparam('key_hash')")}


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr, *_names(node.value)]
    if isinstance(node, ast.Call | ast.Subscript):
        return _names(node.func if isinstance(node, ast.Call) else node.value)
    return []


def test_keys_and_signatures_are_only_compared_as_digests() -> None:
    """An API key is hashed (SHA-256) before anything looks at it: the key cache and the
    database are indexed by the hash, so how long a lookup takes says nothing about the key
    (finding a key from its hash's prefix is a preimage search). Signatures and passwords go
    through `hmac.compare_digest`. No `==` anywhere compares such a value."""
    from daemon.api.keycache import KeyCache
    from daemon.api.lookups import AGENT_FOR_KEY_HASH
    from daemon.ids import hash_api_key
    from storage.models import Agent

    # 1. The key cache only ever uses the key to hash it.
    source = textwrap.dedent(inspect.getsource(KeyCache.agent_id))
    uses = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name) and n.id == "key"
            and isinstance(n.ctx, ast.Load)]
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "hash_api_key"]
    assert uses and len(uses) == len(calls) and all(
        len(c.args) == 1 and isinstance(c.args[0], ast.Name) and c.args[0].id == "key"
        for c in calls)
    _counted()

    # 2. What the database is asked for is the digest, and it holds nothing else of a key.
    seen: list[str] = []

    async def lookup(key_hash: str) -> str | None:
        seen.append(key_hash)
        return None

    key = "pr_" + secrets.token_urlsafe(32)
    assert asyncio.run(KeyCache(lookup).agent_id(key)) is None
    assert seen == [hashlib.sha256(key.encode()).hexdigest()] == [hash_api_key(key)]
    where = str(AGENT_FOR_KEY_HASH.whereclause)
    assert where == "agents.key_hash = :key_hash", where
    assert {c.name for c in Agent.__table__.columns} & {"api_key", "key"} == set()  # type: ignore[attr-defined]
    _counted()

    # 3. No plain comparison of a key, hash, signature or password anywhere in the product.
    root = Path(__file__).resolve().parents[2]
    found = set()
    for f in sorted([*root.glob("daemon/**/*.py"), *root.glob("storage/*.py")]):
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.Compare) or not any(
                    isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
                continue
            if any(_SECRET_NAME.search(n) for side in (node.left, *node.comparators)
                   for n in _names(side)):
                found.add((f.relative_to(root).as_posix(), ast.unparse(node)))
    assert found == _ALLOWED, found - _ALLOWED
    for module, function in (("storage/presign.py", "_matches"),
                             ("daemon/passwords.py", "matches")):
        tree = ast.parse((root / module).read_text())
        fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                  and n.name == function)
        assert "hmac.compare_digest(" in ast.unparse(fn), (module, function)
    _counted()


def _secrets_of(keys: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, key in enumerate(keys):
        out[f"key {i}"] = key
        out[f"key {i} prefix"] = key[:10]
        out[f"key {i} hash"] = hashlib.sha256(key.encode()).hexdigest()
    return out


def test_no_key_prefix_or_hash_reaches_a_log_line_or_a_stored_row(world: World) -> None:
    d = world.d
    guessed = "pr_" + secrets.token_urlsafe(32)
    # Refusals, which the API logs, with every key this module knows; then a line to wait for.
    with httpx.Client(base_url=d.url) as client:
        for key in [*world.keys, guessed]:
            client.get("/v1/messages", headers={"X-API-Key": key})
            client.get(f"/v1/messages/{FAKE_MESSAGE}", headers={"Authorization": f"Bearer {key}"})
    marker = d.send(_mail("ann@authz.test"), ["ann@authz.test"])
    d.wait_for(lambda: any(marker in json.dumps(e) for e in list(d.logs)), 10.0, "a log line")
    lines = [json.dumps(e, ensure_ascii=False) for e in list(d.logs)] + list(d.stderr)
    for what, value in _secrets_of([*world.keys, guessed]).items():
        hits = [ln for ln in lines if value in ln]
        assert not hits, (what, hits[:3])
        _counted()
    # Stored hashed: no row holds a whole key (an agent row keeps its hash and a display prefix).
    db = d.root / "var" / "postroom.db"
    if not db.exists():  # the PostgreSQL pass: this half reads the daemon's SQLite file
        return
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    for key in [*world.keys, guessed]:
        assert key not in dump
        _counted()

