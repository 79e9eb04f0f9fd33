"""Seed 001 (AgentPost) run as written, on the local store and on S3: the Python SDK snippets
(the client constructed by a prelude, SPEC §17) and the curl ones (`$AGENTPOST_API_KEY` in the
environment), upload-then-send and download. After a send, the second local agent gets the
message whose attachment has exactly the bytes of `./quarterly-report.pdf` (2,450,000, the size
the snippet declares); after a download, the file written is the attachment's bytes. The seed's
two JavaScript snippets use AgentPost's own JavaScript SDK, which postroom does not ship: they
are located and syntax-checked (test_locators.py) but not run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from tests.mail import with_attachment
from tests.seeds.checks import (
    Agent,
    Site,
    inbound_attachment,
    inbox_id,
    message_ids,
    new_message,
    pdf,
    sha256,
    uploaded,
)
from tests.seeds.run import client_prelude, run_bash, run_python
from tests.seeds.snippets import substituted

pytestmark = pytest.mark.e2e

BASE = "https://api.agent-post.dev"
DECLARED = 2_450_000  # the size both upload snippets declare


def _send_table(site: Site, sender: Agent, recipient: Agent) -> dict[str, str]:
    return {"inb_abc123": inbox_id(site.daemon, sender), "cfo@acmeco.com": recipient.address}


def _check_delivered(site: Site, recipient: Agent, known: set[str], data: bytes) -> None:
    """The recipient got one new message, "Q1 2026 Report", with exactly `data` attached."""
    d = site.daemon
    view = new_message(d, recipient, known)
    assert view["subject"] == "Q1 2026 Report"
    status, got = inbound_attachment(d, recipient, view["id"])
    assert status["status"] == "ready" and status["file_name"] == "quarterly-report.pdf"
    assert status["content_type"] == "application/pdf"
    assert status["size"] == DECLARED and sha256(got) == sha256(data)


def test_the_python_upload_and_send_snippet_delivers_the_file(
        site: Site, sender: Agent, recipient: Agent, tmp_path: Path) -> None:
    data = pdf(DECLARED)
    (tmp_path / "quarterly-report.pdf").write_bytes(data)
    code = substituted("001-python-upload", _send_table(site, sender, recipient))
    known = message_ids(site.daemon, recipient)
    ran = run_python(code, tmp_path, client_prelude(site.daemon.url, sender.key),
                     report={"upload_id": "upload.id", "message_id": "message.id"})
    view, stored = uploaded(site.daemon, sender, ran.reported["upload_id"])
    assert view["size"] == DECLARED and sha256(stored) == sha256(data)
    with site.daemon.api(sender.key) as api:
        sent = api.get(f"/v1/messages/{ran.reported['message_id']}")
    assert sent.status_code == 200 and sent.json()["direction"] == "outbound", sent.text
    _check_delivered(site, recipient, known, data)


def test_the_curl_upload_and_send_snippet_delivers_the_file(
        site: Site, sender: Agent, recipient: Agent, tmp_path: Path) -> None:
    data = pdf(DECLARED)
    (tmp_path / "quarterly-report.pdf").write_bytes(data)
    code = substituted("001-curl-upload", {BASE: site.daemon.url,
                                           **_send_table(site, sender, recipient)})
    known = message_ids(site.daemon, recipient)
    ran = run_bash(code, tmp_path, {"AGENTPOST_API_KEY": sender.key})
    # The last command prints the send's answer: the queued message.
    assert json.loads(ran.stdout.splitlines()[-1])["id"]
    _check_delivered(site, recipient, known, data)


def _inbound_attachment_id(site: Site, agent: Agent, payload: bytes) -> str:
    """An attachment `quarterly-report.pdf` of a message the agent received over SMTP."""
    d = site.daemon
    msg_id = d.send(with_attachment(agent.address, payload, file_name="quarterly-report.pdf"),
                    [agent.address])
    [att] = d.wait_message(agent.key, msg_id)["attachments"]
    assert att["status"] == "ready", att
    return str(att["id"])


def _uploaded_attachment_id(site: Site, agent: Agent, payload: bytes) -> str:
    """An upload `quarterly-report.pdf` made through the seed's upload-url flow."""
    with site.daemon.api(agent.key) as api:
        r = api.post("/api/v1/attachments/upload-url", json={
            "filename": "quarterly-report.pdf", "mime_type": "application/pdf",
            "size": len(payload)})
    assert r.status_code == 200, r.text
    put = httpx.put(r.json()["upload_url"], content=payload,
                    headers={"Content-Type": "application/pdf"}, timeout=30)
    assert put.status_code == 200, put.text
    return str(r.json()["id"])


ATTACHMENT_SOURCES = {"inbound": _inbound_attachment_id, "upload": _uploaded_attachment_id}


@pytest.mark.parametrize("source", sorted(ATTACHMENT_SOURCES))
def test_the_python_download_snippet_writes_the_attachment(
        site: Site, sender: Agent, tmp_path: Path, source: str) -> None:
    payload = pdf(300_000)
    att_id = ATTACHMENT_SOURCES[source](site, sender, payload)
    (tmp_path / "downloads").mkdir()
    code = substituted("001-python-download", {"att_xyz789": att_id})
    ran = run_python(code, tmp_path, client_prelude(site.daemon.url, sender.key),
                     report={"id": "attachment.id", "size": "attachment.size"})
    assert ran.reported == {"id": att_id, "size": len(payload)}
    written = tmp_path / "downloads" / "quarterly-report.pdf"
    assert sha256(written.read_bytes()) == sha256(payload)


@pytest.mark.parametrize("source", sorted(ATTACHMENT_SOURCES))
def test_the_curl_download_snippet_writes_the_attachment(
        site: Site, sender: Agent, tmp_path: Path, source: str) -> None:
    payload = pdf(300_000)
    att_id = ATTACHMENT_SOURCES[source](site, sender, payload)
    code = substituted("001-curl-download", {BASE: site.daemon.url, "att_xyz789": att_id})
    run_bash(code, tmp_path, {"AGENTPOST_API_KEY": sender.key})
    assert sha256((tmp_path / "downloaded-file.pdf").read_bytes()) == sha256(payload)
    assert sorted(os.listdir(tmp_path)) == ["downloaded-file.pdf"]
