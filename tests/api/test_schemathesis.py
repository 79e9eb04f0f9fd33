"""Hostile HTTP input (issue 9 item 3): schemathesis against the real daemon's `/openapi.json`,
then oversized and unparsable bodies on every endpoint that takes one.

schemathesis runs as its command line (`schemathesis run`), the interface its users run: its
pytest integration does not work with the pytest this suite uses. It fuzzes every operation with
a valid key, from the document alone plus a few real ids (two delivered messages with
attachments, one upload) that it uses for about half of the ids it sends, so requests get past
the 404 into the routes' real work. Every answer must be one the document declares: no 5xx, a
declared status, the declared content type and headers, a body of the declared schema (the
error body included), 4xx for what the schema calls invalid, 401 without the key, and 405 with
`Allow` for an undeclared method. The run is deterministic and bounded (`MAX_EXAMPLES`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import figures
from tests.harness import Daemon, running_daemon
from tests.mail import with_attachment

MAX_EXAMPLES = 100  # per operation in the fuzzing phase; the coverage phase adds its own cases
UPLOAD_CAP = 64 * 1024  # uploads.max_bytes here, so an oversized upload is cheap to send
MAX_BODY = 64 * 1024  # http.max_body (the default) for JSON requests
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance",
          "negative_data_rejection", "ignored_auth", "unsupported_method",
          "allow_header_conformance")


@dataclass
class Fuzzed:
    """The daemon under fuzz, the agent whose key every request carries, and real ids."""

    daemon: Daemon
    api_key: str
    message_ids: list[str]
    attachment_ids: list[str]
    object_keys: list[str]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    # Long polls hold 0.2 s at most here: the fuzzer asks for `wait=30` as readily as for 0.
    with running_daemon(tmp_path_factory.mktemp("schemathesis"),
                        extra=f"[uploads]\nmax_bytes = {UPLOAD_CAP}\n",
                        env={"POSTROOM_HTTP__MAX_WAIT": "200ms"}) as d:
        key = d.add_agent("fuzz", "fuzz@agents.test")["api_key"]
        message_ids, attachment_ids = [], []
        for payload, name, ctype in ((b"%PDF-1.4 fuzz", "report.pdf", "application/pdf"),
                                     (b"a,b\n1,2\n", "data.csv", "text/csv")):
            msg_id = d.send(with_attachment("fuzz@agents.test", payload, name, ctype),
                            ["fuzz@agents.test"])
            message_ids.append(msg_id)
            attachment_ids += [a["id"] for a in d.wait_message(key, msg_id)["attachments"]]
        with d.api(key) as api:
            up = api.post("/v1/uploads", files={"file": ("notes.txt", b"notes", "text/plain")})
        assert up.status_code == 201, up.text
        yield Fuzzed(d, key, message_ids, [*attachment_ids, up.json()["id"]],
                     [up.json()["object_key"]])


def _toml_list(values: list[Any]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _config(f: Fuzzed) -> str:
    """schemathesis.toml: the key on every request, the generator bounded and deterministic,
    real ids offered for half of the path parameters and object keys."""
    return f"""
[headers]
Authorization = "Bearer {f.api_key}"

[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true
database = "none"
# The one key above, not generated ones (test_api_keys.py and the authorization tests own those).
with-security-parameters = false

# A body over http.max_body is refused, before it is read, with 413: a rejection too.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428",
                     "429"]

[dictionaries.message_ids]
values = {_toml_list(f.message_ids)}
[dictionaries.attachment_ids]
values = {_toml_list(f.attachment_ids)}
[dictionaries.indexes]
values = [0, 1]
[dictionaries.object_keys]
values = {_toml_list(f.object_keys)}

[parameters]
"path.message_id" = {{ dictionary = "message_ids", probability = 0.5 }}
"path.attachment_id" = {{ dictionary = "attachment_ids", probability = 0.5 }}
"path.index" = {{ dictionary = "indexes", probability = 0.5 }}
"body.object_key" = {{ dictionary = "object_keys", probability = 0.5 }}
"""


def _interactions(ndjson: Path) -> Counter[tuple[str, int]]:
    """The HTTP exchanges schemathesis made, by operation and status, from its event log."""
    seen: Counter[tuple[str, int]] = Counter()
    for line in ndjson.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if finished is None:
            continue
        recorder = finished["recorder"]
        for interaction in recorder.get("interactions", {}).values():
            response = interaction.get("response") or {}
            seen[recorder["label"], int(response.get("status_code", 0))] += 1
    return seen


def test_schemathesis_finds_every_answer_documented(fuzzed: Fuzzed, tmp_path: Path) -> None:
    (tmp_path / "schemathesis.toml").write_text(_config(fuzzed))
    reports = tmp_path / "reports"
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--no-color",
         "--config-file", str(tmp_path / "schemathesis.toml"),
         "run", f"{fuzzed.daemon.url}/openapi.json", "--checks", ",".join(CHECKS),
         "--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "30",
         "--continue-on-failure", "--report", "json,ndjson", "--report-dir", str(reports)],
        cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True,
        timeout=300)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-4000:]

    summary = json.loads(next(reports.glob("json-*.json")).read_text())
    operations = summary["operations"]
    assert operations["tested"] == operations["total"] >= 14, operations
    seen = _interactions(next(reports.glob("ndjson-*.ndjson")))
    assert not [k for k in seen if k[1] >= 500 or k[1] == 0], seen
    # The real ids took requests past the 404 into every route that looks one up.
    for label in ("GET /v1/messages/{message_id}",
                  "GET /v1/messages/{message_id}/attachments/{index}",
                  "POST /v1/messages/{message_id}/attachments/{index}/download",
                  "POST /v1/messages/{message_id}/raw/download",
                  "GET /v1/attachments/{attachment_id}", "POST /v1/uploads/download"):
        assert seen[label, 200] > 0, (label, seen)
    assert not any(e.get("event") == "api.unexpected_error" for e in fuzzed.daemon.logs)
    figures.add("hostile inputs tried", sum(seen.values()))


def _json_endpoints(f: Fuzzed) -> list[str]:
    msg = f.message_ids[0]
    return [f"/v1/messages/{msg}/attachments/0/download", f"/v1/messages/{msg}/raw/download",
            "/v1/uploads/form", "/v1/uploads/url", "/v1/uploads/download"]


def _error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])


def _chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    for _ in range(total // size + 1):
        yield b" " * size


def test_oversized_bodies_get_413_on_every_endpoint_that_takes_one(fuzzed: Fuzzed) -> None:
    tried = 0
    with fuzzed.daemon.api(fuzzed.api_key) as api:
        for path in _json_endpoints(fuzzed):
            declared = api.post(path, content=b"{" + b" " * MAX_BODY + b"}",
                                headers={"content-type": "application/json"})
            chunked = api.post(path, content=_chunks(MAX_BODY + 1),
                               headers={"content-type": "application/json"})
            for r in (declared, chunked):
                assert r.status_code == 413, (path, r.status_code, r.text)
                assert _error_code(r) == "too_large"
            tried += 2
        # A direct upload sent chunked (no length to refuse it by) is cut off at the cap.
        boundary = "b0undary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n")

        def upload() -> Iterator[bytes]:
            yield head.encode()
            yield from (b"x" * 8192 for _ in range(UPLOAD_CAP // 8192 + 2))
            yield f"\r\n--{boundary}--\r\n".encode()

        r = api.post("/v1/uploads", content=upload(),
                     headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413 and _error_code(r) == "too_large", r.text
        tried += 1
    figures.add("hostile inputs tried", tried)


BAD_JSON = [
    b"{not json",
    b"\xff\xfe{\x00}",  # not UTF-8: FastAPI cannot even decode it (400)
    b"[]",
    b'"a string"',
    b"12",
    b'{"unknown": 1}',
    b'{"expires_in": 1e400}',
    b"[" * 30000 + b"]" * 30000,  # deeper than the JSON parser recurses
    b'{"a": "\\ud800"}',
]


def test_bad_json_gets_400_or_422_on_every_json_endpoint(fuzzed: Fuzzed) -> None:
    tried = 0
    with fuzzed.daemon.api(fuzzed.api_key) as api:
        for path in _json_endpoints(fuzzed):
            for body in BAD_JSON:
                r = api.post(path, content=body, headers={"content-type": "application/json"})
                assert r.status_code in (400, 422), (path, body[:20], r.status_code, r.text)
                assert _error_code(r) == "invalid_request", (path, body[:20], r.text)
                tried += 1
    assert not any(e.get("event") == "api.unexpected_error" for e in fuzzed.daemon.logs)
    figures.add("hostile inputs tried", tried)
