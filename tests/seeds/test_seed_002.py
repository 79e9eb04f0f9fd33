"""Seed 002 (AgentSend) run as written, on the local store and on S3: the curl upload, the
JavaScript `fetch` upload (node, with `fileBlob` made from a real file by a prelude) and the curl
get, with `$AGENTSEND_API_KEY` in the environment. Each answer has every field, of the same JSON
type, of the seed's response example, and its `url` serves the uploaded bytes; an upload's id
then sends the file to the second local agent, which gets exactly those bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.seeds.checks import (
    Agent,
    Site,
    fetched,
    inbound_attachment,
    message_ids,
    new_message,
    pdf,
    sha256,
)
from tests.seeds.run import run_bash, run_node
from tests.seeds.snippets import snippet, substituted

pytestmark = pytest.mark.e2e

BASE = "https://api.agentsend.io"
SIZE = 204_800  # the size of the seed's example answer


def _like_the_example(answer: dict[str, Any], example_name: str) -> None:
    """Every field of the seed's example is there, with the example's JSON type (postroom may
    add fields of its own: a client of the seed reads only these)."""
    example = json.loads(snippet(example_name))
    assert {k: type(answer.get(k)) for k in example} == {k: type(v) for k, v in example.items()}


def _checked_upload(answer: dict[str, Any], data: bytes) -> None:
    _like_the_example(answer, "002-json-created")
    assert answer["filename"] == "report.pdf" and answer["contentType"] == "application/pdf"
    assert answer["size"] == len(data) and sha256(fetched(answer["url"])) == sha256(data)


def _agentsend(site: Site, agent: Agent) -> httpx.Client:
    return httpx.Client(base_url=site.daemon.url, headers={"x-api-key": agent.key}, timeout=40)


def _send_and_check(site: Site, sender: Agent, recipient: Agent, attachment_id: str,
                    data: bytes) -> None:
    """The upload, sent by id from the sender's inbox, reaches the recipient byte for byte."""
    d = site.daemon
    known = message_ids(d, recipient)
    with _agentsend(site, sender) as api:
        inboxes = api.get("/inboxes").json()["inboxes"]
        [inbox] = [i["id"] for i in inboxes if i["address"] == sender.address]
        r = api.post(f"/inboxes/{inbox}/messages", json={
            "to": [recipient.address], "subject": "report", "bodyText": "attached",
            "attachmentIds": [attachment_id]})
    assert r.status_code == 202, r.text
    view = new_message(d, recipient, known)
    status, got = inbound_attachment(d, recipient, view["id"])
    assert status["file_name"] == "report.pdf" and sha256(got) == sha256(data)


def test_the_curl_upload_snippet_answers_the_attachment(
        site: Site, sender: Agent, recipient: Agent, tmp_path: Path) -> None:
    data = pdf(SIZE)
    report = tmp_path / "files" / "report.pdf"
    report.parent.mkdir()
    report.write_bytes(data)
    code = substituted("002-curl-upload", {BASE: site.daemon.url,
                                           "/path/to/report.pdf": str(report)})
    ran = run_bash(code, tmp_path, {"AGENTSEND_API_KEY": sender.key})
    answer = json.loads(ran.stdout)
    _checked_upload(answer, data)
    _send_and_check(site, sender, recipient, answer["id"], data)


# The seed's `fileBlob` is the file it uploads; node's Blob is how a script holds one.
FILE_BLOB = """\
import { readFileSync } from "node:fs";
const fileBlob = new Blob([readFileSync("report.pdf")], { type: "application/pdf" });
"""


def test_the_javascript_upload_snippet_answers_the_attachment(
        site: Site, sender: Agent, tmp_path: Path) -> None:
    data = pdf(SIZE)
    (tmp_path / "report.pdf").write_bytes(data)
    code = substituted("002-js-upload", {BASE: site.daemon.url})
    ran = run_node(code, tmp_path, {"AGENTSEND_API_KEY": sender.key}, FILE_BLOB,
                   report={"attachment": "attachment"})
    answer = ran.reported["attachment"]
    assert ran.stdout.splitlines() == [answer["id"]]
    _checked_upload(answer, data)


def test_the_curl_get_snippet_answers_a_fresh_url(site: Site, sender: Agent,
                                                  tmp_path: Path) -> None:
    data = pdf(SIZE)
    with _agentsend(site, sender) as api:
        r = api.post("/attachments", files={"file": ("report.pdf", data, "application/pdf")})
    assert r.status_code == 201, r.text
    uploaded = r.json()
    code = substituted("002-curl-get", {BASE: site.daemon.url,
                                        "att_01j9zxkp4qbc7n3m8td5e6fvg2": uploaded["id"]})
    answer = json.loads(run_bash(code, tmp_path, {"AGENTSEND_API_KEY": sender.key}).stdout)
    _like_the_example(answer, "002-json-get")
    assert answer["id"] == uploaded["id"] and answer["size"] == len(data)
    assert sha256(fetched(answer["url"])) == sha256(data)
