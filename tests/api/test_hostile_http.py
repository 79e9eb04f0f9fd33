"""Hostile HTTP input gets a clear 4xx with the API's error body, never a 500."""

from __future__ import annotations

from typing import Any

import httpx

from tests.harness import Daemon
from tests.mail import with_attachment


def _error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])


def test_hostile_paths_and_parameters_never_500(daemon: Daemon, alice: dict[str, Any]) -> None:
    msg_id = daemon.send(with_attachment("alice@agents.test", b"%PDF-1.4 x"),
                         ["alice@agents.test"])
    daemon.wait_message(alice["api_key"], msg_id)
    huge = "9" * 30
    cases = [
        ("GET", f"/v1/messages/{msg_id}/attachments/{huge}", 422),
        ("GET", f"/v1/messages/{msg_id}/attachments/9223372036854775808", 422),
        ("GET", f"/v1/messages/{msg_id}/attachments/-1", 422),
        ("GET", f"/v1/messages/{msg_id}/attachments/abc", 422),
        ("POST", f"/v1/messages/{msg_id}/attachments/{huge}/download", 422),
        ("GET", f"/v1/messages/{msg_id}/attachments/0?wait=31", 422),
        ("GET", f"/v1/messages/{msg_id}/attachments/0?wait=nan", 422),
        ("GET", f"/v1/messages?after={huge}", 400),
        ("GET", "/v1/messages?after=-5", 400),
        ("GET", "/v1/messages?limit=0", 422),
        ("GET", "/v1/messages?limit=100000", 422),
        ("GET", f"/v1/messages/{'x' * 5000}", 422),
        ("GET", "/v1/messages/..%2F..%2Fetc%2Fpasswd", 404),
        ("GET", f"/v1/messages/{msg_id}/attachments/7", 404),
    ]
    with daemon.api(alice["api_key"]) as api:
        for method, path, status in cases:
            r = api.request(method, path)
            assert r.status_code == status, (path, r.status_code, r.text)
            _error_code(r)


def test_bad_bodies_are_refused(daemon: Daemon, alice: dict[str, Any]) -> None:
    msg_id = daemon.send(with_attachment("alice@agents.test", b"%PDF-1.4 y"),
                         ["alice@agents.test"])
    daemon.wait_message(alice["api_key"], msg_id)
    url = f"/v1/messages/{msg_id}/attachments/0/download"
    with daemon.api(alice["api_key"]) as api:
        for body in (b"{not json", b'{"expires_in": true}', b'{"expires_in": "5"}',
                     b'{"expires_in": 5, "extra": 1}', b"[]", b'{"expires_in": 1e400}'):
            r = api.post(url, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422, (body, r.text)
            assert _error_code(r) == "invalid_request"
        ok = api.post(url, json={"expires_in": 5})
        assert ok.status_code == 200


def test_oversized_bodies_get_413_before_authentication(daemon: Daemon) -> None:
    big = b"{" + b" " * (200 * 1024) + b"}"
    r = httpx.post(f"{daemon.url}/v1/messages/x/raw/download", content=big,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and _error_code(r) == "too_large"

    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 4096

    r = httpx.post(f"{daemon.url}/v1/messages/x/raw/download", content=chunks(),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_forged_signatures_are_403_not_500(daemon: Daemon, alice: dict[str, Any]) -> None:
    for sig in ("%C3%A9", "%ff%fe", "", "a" * 5000):
        r = httpx.get(f"{daemon.url}/objects/raw/x.eml?exp=9999999999&fn=eA&ct=text%2Fplain"
                      f"&sig={sig}")
        assert r.status_code == 403, (sig, r.text)
    for path in ("/objects/../../etc/passwd", "/objects/%2e%2e/%2e%2e/etc/passwd",
                 "/objects//etc/passwd", "/objects/raw/"):
        r = httpx.get(f"{daemon.url}{path}?exp=9999999999&fn=eA&ct=text%2Fplain&sig=x")
        assert r.status_code in (403, 404), (path, r.status_code)
        assert "root:" not in r.text
