"""Agent uploads through the real daemon, on the local store and on S3 (moto): the three seed
flows (presigned POST form sent with `requests` exactly as the seed shows, presigned PUT, direct
multipart), each downloaded back byte for byte; the local store's enforcement of every policy
rule; what postroom signs for S3 (moto enforces nothing, so it is decoded and checked); who may
see what; and bad input answered with the API's error body, never a 500."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests

from tests.harness import REPO, Daemon, running_daemon
from tests.mail import with_attachment
from tests.s3server import MotoServer

CAP = 256 * 1024  # uploads.max_bytes of these daemons
TTL = 600
UPLOADS = f'[uploads]\nmax_bytes = "{CAP}"\n'


def _s3_extra(server: MotoServer) -> str:
    return (f'[storage]\nbackend = "s3"\nbucket = "{server.new_bucket()}"\nprefix = "p/"\n'
            f'endpoint_url = "{server.endpoint_url}"\nregion = "us-east-1"\n'
            f'presign_ttl = "{TTL}s"\n' + UPLOADS)


@pytest.fixture(scope="module", params=["local", "s3"])
def backend(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Daemon]]:
    """A daemon on each backend, with its two agents created."""
    if request.param == "s3":
        extra = _s3_extra(request.getfixturevalue("s3_server"))
    else:
        extra = f'[storage]\npresign_ttl = "{TTL}s"\n' + UPLOADS
    with running_daemon(tmp_path_factory.mktemp(f"uploads-{request.param}"), extra=extra) as d:
        yield request.param, d


@pytest.fixture(scope="module")
def agents(backend: tuple[str, Daemon]) -> dict[str, dict[str, Any]]:
    _, d = backend
    return {"ann": d.add_agent("ann", "ann@agents.test"),
            "ben": d.add_agent("ben", "ben@agents.test")}


def _api(d: Daemon, agent: dict[str, Any]) -> httpx.Client:
    return d.api(agent["api_key"])


def _download(d: Daemon, agent: dict[str, Any], object_key: str) -> bytes:
    with _api(d, agent) as api:
        r = api.post("/v1/uploads/download", json={"object_key": object_key})
    assert r.status_code == 200, r.text
    got = httpx.get(r.json()["url"], timeout=30)
    assert got.status_code == 200, got.text
    return got.content


def _form(d: Daemon, agent: dict[str, Any], **body: Any) -> dict[str, Any]:
    with _api(d, agent) as api:
        r = api.post("/v1/uploads/form", json={"file_name": "report.pdf",
                                              "content_type": "application/pdf",
                                              "max_bytes": 100_000, **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _put_url(d: Daemon, agent: dict[str, Any], size: int, **body: Any) -> dict[str, Any]:
    with _api(d, agent) as api:
        r = api.post("/v1/uploads/url", json={"file_name": "data.csv", "content_type": "text/csv",
                                             "size": size, **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_form_upload_sent_as_the_seed_shows_downloads_back(
        backend: tuple[str, Daemon], agents: dict[str, dict[str, Any]]) -> None:
    _, d = backend
    ann = agents["ann"]
    data = b"%PDF-1.7\n" + os.urandom(50_000)
    form = _form(d, ann)
    upload = form["upload"]
    assert form["object_key"].startswith(f"uploads/{ann['id']}/")
    assert form["object_key"].endswith("-report.pdf")
    r = requests.post(upload["url"], data={k: v for k, v in upload.items() if k != "url"},
                      files={"file": ("report.pdf", data, "application/pdf")}, timeout=30)
    assert r.status_code == 204, r.text
    assert _download(d, ann, form["object_key"]) == data
    with _api(d, ann) as api:
        meta = api.get(f"/v1/attachments/{form['id']}").json()
    assert meta["status"] == "ready" and meta["size"] == len(data)
    assert meta["file_name"] == "report.pdf" and meta["content_type"] == "application/pdf"
    assert httpx.get(meta["url"], timeout=30).content == data


def test_put_upload_downloads_back(backend: tuple[str, Daemon],
                                   agents: dict[str, dict[str, Any]]) -> None:
    _, d = backend
    ann = agents["ann"]
    data = b"a,b\n" + os.urandom(30_000)
    issued = _put_url(d, ann, len(data))
    assert set(issued) == {"upload_url", "object_key", "id", "expires_at"}
    with _api(d, ann) as api:
        before = api.get(f"/v1/attachments/{issued['id']}").json()
        assert before["status"] == "pending" and before["url"] is None
        assert api.post("/v1/uploads/download",
                        json={"object_key": issued["object_key"]}).status_code == 409
    r = httpx.put(issued["upload_url"], content=data, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert _download(d, ann, issued["object_key"]) == data
    with _api(d, ann) as api:
        after = api.get(f"/v1/attachments/{issued['id']}").json()
    assert after["status"] == "ready" and after["size"] == len(data)


def test_direct_upload_answers_201_with_the_attachment_object(
        backend: tuple[str, Daemon], agents: dict[str, dict[str, Any]]) -> None:
    _, d = backend
    ann = agents["ann"]
    data = os.urandom(CAP)  # exactly the cap is allowed
    with _api(d, ann) as api:
        r = api.post("/v1/uploads", files={"file": ("../../etc/Bericht ü.bin", data,
                                                    "application/octet-stream")})
    assert r.status_code == 201, r.text
    obj = r.json()
    assert obj["id"].startswith("upl_")
    assert obj["file_name"] == "Bericht ü.bin"
    assert obj["size"] == len(data) and obj["sha256"] == hashlib.sha256(data).hexdigest()
    assert obj["content_type"] == "application/octet-stream" and obj["created_at"]
    assert obj["object_key"].startswith(f"uploads/{ann['id']}/") and ".." not in obj["object_key"]
    got = httpx.get(obj["url"], timeout=30)
    assert got.content == data
    assert "filename*=UTF-8''Bericht%20%C3%BC.bin" in got.headers["content-disposition"]
    assert _download(d, ann, obj["object_key"]) == data
    with _api(d, ann) as api:
        again = api.get(f"/v1/attachments/{obj['id']}").json()
    assert again["sha256"] == obj["sha256"] and again["status"] == "ready"


def test_direct_upload_over_the_cap_is_413(backend: tuple[str, Daemon],
                                           agents: dict[str, dict[str, Any]]) -> None:
    _, d = backend
    with _api(d, agents["ann"]) as api:
        r = api.post("/v1/uploads", files={"file": ("big.bin", b"x" * (CAP + 1))})
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "too_large"
    # A body declared over the cap is refused before a byte of it is read.
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=10) as sock:
        sock.sendall(f"POST /v1/uploads HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {agents['ann']['api_key']}\r\n"
                     f"Content-Type: multipart/form-data; boundary=b\r\n"
                     f"Content-Length: {CAP + 10**6}\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 413 ")


def test_another_agent_sees_nothing_of_ann(backend: tuple[str, Daemon],
                                           agents: dict[str, dict[str, Any]]) -> None:
    _, d = backend
    ann, ben = agents["ann"], agents["ben"]
    with _api(d, ann) as api:
        mine = api.post("/v1/uploads", files={"file": ("a.txt", b"ann's", "text/plain")}).json()
    msg_id = d.send(with_attachment("ann@agents.test", b"inbound bytes", file_name="in.txt",
                                    content_type="text/plain"), ["ann@agents.test"])
    [att] = d.wait_message(ann["api_key"], msg_id)["attachments"]
    with _api(d, ann) as api:
        seen = api.get(f"/v1/attachments/{att['id']}")
    assert seen.status_code == 200, seen.text
    assert seen.json()["message_id"] == msg_id and seen.json()["status"] == "ready"
    assert httpx.get(seen.json()["url"], timeout=30).content == b"inbound bytes"
    with _api(d, ben) as api:
        r = api.post("/v1/uploads/download", json={"object_key": mine["object_key"]})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        for other in (mine["id"], att["id"], "upl_nothing", "att_nothing", "x"):
            r = api.get(f"/v1/attachments/{other}")
            assert r.status_code == 404, (other, r.text)
            assert r.json()["error"]["code"] == "not_found"
        # A key that claims ben's prefix but climbs out of it is refused, not resolved.
        sneaky = f"uploads/{ben['id']}/../{ann['id']}/{mine['object_key'].rsplit('/', 1)[1]}"
        assert api.post("/v1/uploads/download", json={"object_key": sneaky}).status_code == 400


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/v1/uploads/form", {"file_name": "a.pdf", "content_type": "application/pdf",
                          "max_bytes": CAP + 1}, 413),
    ("/v1/uploads/form", {"file_name": "a.pdf", "content_type": "application/pdf",
                          "max_bytes": -1}, 422),
    ("/v1/uploads/form", {"file_name": "a.pdf", "content_type": "application/pdf",
                          "max_bytes": 10**30}, 422),
    ("/v1/uploads/form", {"file_name": "a.pdf", "content_type": "application/pdf",
                          "max_bytes": "10"}, 422),
    ("/v1/uploads/form", {"file_name": "a.pdf", "content_type": "application/pdf",
                          "bucket": "x"}, 422),
    ("/v1/uploads/form", {"file_name": "../../etc/passwd", "content_type": "text/plain"}, 422),
    ("/v1/uploads/form", {"file_name": "a\r\nb.txt", "content_type": "text/plain"}, 422),
    ("/v1/uploads/form", {"file_name": "x" * 4096, "content_type": "text/plain"}, 422),
    ("/v1/uploads/form", {"file_name": "..", "content_type": "text/plain"}, 422),
    ("/v1/uploads/form", {"file_name": "a.txt", "content_type": "text/plain\r\nX-Evil: 1"}, 422),
    ("/v1/uploads/form", {"file_name": 7, "content_type": "text/plain"}, 422),
    ("/v1/uploads/url", {"file_name": "a.csv", "content_type": "text/csv", "size": CAP + 1}, 413),
    ("/v1/uploads/url", {"file_name": "a.csv", "content_type": "text/csv", "size": -5}, 422),
    ("/v1/uploads/url", {"file_name": "a.csv", "content_type": "text/csv"}, 422),
    ("/v1/uploads/url", {"file_name": "a\x00.csv", "content_type": "text/csv", "size": 1}, 422),
    ("/v1/uploads/download", {"object_key": "raw/msg_x.eml"}, 403),
    ("/v1/uploads/download", {"object_key": "/etc/passwd"}, 400),
    ("/v1/uploads/download", {"object_key": ["a"]}, 422),
    ("/v1/uploads/download", {}, 422),
])
def test_bad_upload_requests_get_the_error_body(
        backend: tuple[str, Daemon], agents: dict[str, dict[str, Any]], path: str,
        body: dict[str, Any], status: int) -> None:
    _, d = backend
    with _api(d, agents["ann"]) as api:
        r = api.post(path, json=body)
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) == {"code", "message"}


def test_bogus_bodies_are_refused_cleanly(backend: tuple[str, Daemon],
                                          agents: dict[str, dict[str, Any]]) -> None:
    _, d = backend
    with _api(d, agents["ann"]) as api:
        assert api.post("/v1/uploads/form", content=b"{not json").status_code == 422
        assert api.post("/v1/uploads", json={"file": "x"}).status_code == 400
        no_file = api.post("/v1/uploads", files={"other": ("a", b"b")})
        assert no_file.status_code == 400
        cut = api.post("/v1/uploads", content=b"--b\r\nContent-Disposition: form-data; "
                       b"name=\"file\"\r\n\r\nno end",
                       headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert cut.status_code == 400 and cut.json()["error"]["code"] == "invalid_multipart"
    assert httpx.post(f"{d.url}/v1/uploads/form", json={}).status_code == 401


def test_openapi_describes_the_upload_endpoints(backend: tuple[str, Daemon]) -> None:
    _, d = backend
    spec = httpx.get(f"{d.url}/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/uploads/form", "/v1/uploads/url", "/v1/uploads", "/v1/uploads/download",
                 "/v1/attachments/{attachment_id}"):
        assert path in paths, path
    assert "multipart/form-data" in paths["/v1/uploads"]["post"]["requestBody"]["content"]
    schemas = spec["components"]["schemas"]
    assert {"FormRequest", "FormResponse", "UrlRequest", "UrlResponse", "UploadObject"} <= set(
        schemas)
    assert not any(p.startswith("/objects") for p in paths)


# The local store enforces every rule of what it signed; for S3 the signed policy is checked.


def _post_form(upload: dict[str, Any], fields: dict[str, str], data: bytes,
               ) -> requests.Response:
    return requests.post(upload["url"], data=fields, files={"file": ("f.pdf", data)}, timeout=30)


def test_the_form_policy_holds_what_was_asked(backend: tuple[str, Daemon],
                                              agents: dict[str, dict[str, Any]]) -> None:
    kind, d = backend
    ann = agents["ann"]
    if kind == "s3":
        _check_s3_form(d, ann)
        return
    form = _form(d, ann, max_bytes=1000)
    upload, fields = form["upload"], {k: v for k, v in form["upload"].items() if k != "url"}
    assert set(fields) == {"key", "Content-Type", "policy", "signature"}
    tampered = {**fields, "signature": fields["signature"][:-2] + "AA"}
    assert _post_form(upload, tampered, b"x").status_code == 403
    other_key = {**fields, "key": fields["key"].replace("report.pdf", "other.pdf")}
    assert _post_form(upload, other_key, b"x").status_code == 403
    other_type = {**fields, "Content-Type": "text/html"}
    assert _post_form(upload, other_type, b"x").status_code == 403
    no_policy = {k: v for k, v in fields.items() if k != "policy"}
    assert _post_form(upload, no_policy, b"x").status_code == 403
    too_big = _post_form(upload, fields, b"x" * 1001)
    assert too_big.status_code == 400, too_big.text
    assert too_big.json()["error"]["code"] == "too_large"
    with _api(d, ann) as api:
        assert api.post("/v1/uploads/download",
                        json={"object_key": form["object_key"]}).status_code == 409
    assert _post_form(upload, fields, b"y" * 1000).status_code == 204
    assert _download(d, ann, form["object_key"]) == b"y" * 1000
    assert list((d.root / "var" / "objects" / ".spool").iterdir()) == []


def test_the_put_url_holds_what_was_asked(backend: tuple[str, Daemon],
                                          agents: dict[str, dict[str, Any]]) -> None:
    kind, d = backend
    ann = agents["ann"]
    if kind == "s3":
        _check_s3_put(d, ann)
        return
    issued = _put_url(d, ann, 10)
    url = issued["upload_url"]
    assert httpx.put(url.replace("sig=", "sig=A"), content=b"0123456789",
                     headers={"Content-Type": "text/csv"}).status_code == 403
    assert httpx.put(url, content=b"0123456789",
                     headers={"Content-Type": "text/html"}).status_code == 403
    assert httpx.put(url.replace("len=10", "len=11"), content=b"0123456789a",
                     headers={"Content-Type": "text/csv"}).status_code == 403
    assert httpx.put(url, content=b"012345678",
                     headers={"Content-Type": "text/csv"}).status_code == 400
    assert httpx.put(url, content=b"0123456789!",
                     headers={"Content-Type": "text/csv"}).status_code == 400
    other = url.replace(issued["object_key"], issued["object_key"] + "x")
    assert httpx.put(other, content=b"0123456789",
                     headers={"Content-Type": "text/csv"}).status_code == 403
    assert httpx.put(url, content=b"0123456789",
                     headers={"Content-Type": "text/csv"}).status_code == 200
    assert _download(d, ann, issued["object_key"]) == b"0123456789"


def _posix(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_local_upload_urls_expire(fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra='[storage]\npresign_ttl = "1s"\n' + UPLOADS) as d:
        ann = d.add_agent("ann", "ann@agents.test")
        form = _form(d, ann, max_bytes=100)
        issued = _put_url(d, ann, 3)
        # The signed lifetime itself is what is under test: wait for the clock to pass it.
        expired = max(_posix(form["expires_at"]), _posix(issued["expires_at"]))
        d.wait_for(lambda: time.time() > expired, 5.0, "the URLs' expiry")
        fields = {k: v for k, v in form["upload"].items() if k != "url"}
        assert _post_form(form["upload"], fields, b"late").status_code == 403
        assert httpx.put(issued["upload_url"], content=b"abc",
                         headers={"Content-Type": "text/csv"}).status_code == 403
        with _api(d, ann) as api:
            r = api.post("/v1/uploads/form", json={"file_name": "a.txt",
                                                  "content_type": "text/plain",
                                                  "expires_in": 3600})
        assert r.status_code == 200
        assert _posix(r.json()["expires_at"]) <= time.time() + 2


# S3: moto enforces nothing, so what postroom signs is decoded and checked.


def _check_s3_form(d: Daemon, ann: dict[str, Any]) -> None:
    form = _form(d, ann, max_bytes=1234)
    fields = {k: v for k, v in form["upload"].items() if k != "url"}
    assert fields["key"] == "p/" + form["object_key"]
    assert fields["Content-Type"] == "application/pdf"
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    assert {"key": "p/" + form["object_key"]} in conditions
    assert {"Content-Type": "application/pdf"} in conditions
    assert ["content-length-range", 0, 1234] in conditions
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC)
    assert time.time() < expiration.timestamp() <= time.time() + TTL + 1
    assert fields["x-amz-signature"] and fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"


def _check_s3_put(d: Daemon, ann: dict[str, Any]) -> None:
    issued = _put_url(d, ann, 77)
    query = parse_qs(urlsplit(issued["upload_url"]).query)
    assert 0 < int(query["X-Amz-Expires"][0]) <= TTL
    signed = set(query["X-Amz-SignedHeaders"][0].split(";"))
    assert {"content-type", "content-length", "host"} <= signed
    assert urlsplit(issued["upload_url"]).path.endswith("/p/" + issued["object_key"])


def test_the_readme_upload_commands_work_as_written(fresh_root: Path, tmp_path: Path) -> None:
    missing = [t for t in ("curl", "jq") if shutil.which(t) is None]
    if missing:  # .ci/run installs them; a developer machine may not have them
        pytest.fail(f"the README's upload commands need {', '.join(missing)}")
    text = (REPO / "README.md").read_text()
    block = text.split("### Uploads", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    with running_daemon(fresh_root) as d:
        agent = d.add_agent("ann", "ann@agents.test")
        work = tmp_path / "work"
        work.mkdir()
        (work / "notes.txt").write_text("notes for the README\n")
        script = (f"export POSTROOM_KEY={agent['api_key']}\n"
                  + block.replace("127.0.0.1:8025", f"127.0.0.1:{d.http_port}"))
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.endswith("notes for the README\n")
    assert '"size": 21' in out.stdout
