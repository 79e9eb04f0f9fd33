"""Seed 001's namespaces through the client against a real daemon (SPEC §6, §17): records with
the seed's attributes for upload URLs, attachments, inboxes, sent messages and inbox pages."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from daemon.client import (
    AttachmentInfo,
    Client,
    Inbox,
    MessagePage,
    PostroomError,
    SentMessage,
    UploadUrl,
)
from tests.harness import Daemon, running_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("resources"),
                        extra='[outbound]\npoll_interval = "0.2s"\n') as d:
        yield d


@pytest.fixture(scope="module")
def keys(daemon: Daemon) -> dict[str, str]:
    return {name: daemon.add_agent(name, f"{name}@agents.test")["api_key"]
            for name in ("ann", "ben")}


@pytest.fixture
def ann(daemon: Daemon, keys: dict[str, str]) -> Iterator[Client]:
    with Client(daemon.url, keys["ann"]) as client:
        yield client


@pytest.fixture
def ben(daemon: Daemon, keys: dict[str, str]) -> Iterator[Client]:
    with Client(daemon.url, keys["ben"]) as client:
        yield client


def _inbox(client: Client) -> Inbox:
    (inbox,) = client.inboxes.list()
    return inbox


def test_the_seed_001_upload_send_and_download_flow_answers_records(
        daemon: Daemon, ann: Client, ben: Client) -> None:
    report = b"%PDF-1.7\n" + os.urandom(30_000)
    inbox = _inbox(ann)
    assert isinstance(inbox, Inbox) and inbox.id.startswith("inb_")
    assert inbox.address == "ann@agents.test" and inbox["address"] == inbox.address

    # Step 1 and 2 of the seed: a presigned URL, then a PUT of exactly `size` bytes.
    upload = ann.attachments.get_upload_url(filename="quarterly-report.pdf",
                                            mime_type="application/pdf", size=len(report))
    assert isinstance(upload, UploadUrl)
    assert upload.key.startswith("uploads/") and upload.id and upload.expires_at
    assert upload.upload_url == upload["upload_url"]
    put = requests.put(upload.upload_url, data=report,
                       headers={"Content-Type": "application/pdf"}, timeout=30)
    assert put.status_code in (200, 204)

    # Step 3: send with the attachment key.
    message = ann.messages.send(
        inbox_id=inbox.id, to=[{"email": "ben@agents.test", "name": "Ben"}],
        subject="Q1 2026 Report", text_body="Please find the quarterly report attached.",
        attachments=[{"key": upload.key, "filename": "quarterly-report.pdf",
                      "mime_type": "application/pdf"}])
    assert isinstance(message, SentMessage)
    assert message.id.startswith("msg_") and message.inbox_id == inbox.id
    assert message.status == "queued" and message.thread_id
    assert [r["address"] for r in message.recipients or []] == ["ben@agents.test"]

    # The upload by id, as an attachment record.
    mine = ann.attachments.get(upload.id)
    assert (mine.id, mine.filename, mine.mime_type, mine.message_id) == (
        upload.id, "quarterly-report.pdf", "application/pdf", None)

    # Ben's inbox lists it with has_attachments; the attachment record downloads it.
    ben_inbox = _inbox(ben)

    def listed() -> Any:
        page = ben.messages.list(ben_inbox.id)
        return next((m for m in page.messages if m.subject == "Q1 2026 Report"), None)

    summary = daemon.wait_for(listed, 30.0, "ben's copy")
    assert summary.has_attachments is True and summary.direction == "inbound"
    status = ben.get_inbound_attachment_status(summary.id, 0, wait=20)
    attachment = ben.attachments.get(status["id"])
    assert isinstance(attachment, AttachmentInfo)
    assert (attachment.filename, attachment.mime_type, attachment.size) == (
        "quarterly-report.pdf", "application/pdf", len(report))
    assert attachment.message_id == summary.id and attachment.expires_at
    assert attachment.download_url is not None
    assert requests.get(attachment.download_url, timeout=30).content == report


def test_an_inbox_page_has_a_cursor(ann: Client) -> None:
    inbox = _inbox(ann)
    page = ann.messages.list(inbox.id, limit=1)
    assert isinstance(page, MessagePage)
    assert page.has_more in (True, False) and page["messages"] == page.raw["messages"]


def test_refusals_raise_with_status_and_code(ann: Client, ben: Client) -> None:
    with pytest.raises(PostroomError) as refused:
        ann.messages.send(inbox_id=_inbox(ben).id, to="x@example.test", subject="s",
                          text_body="t")
    assert refused.value.status == 404
    with pytest.raises(PostroomError) as refused:
        ann.attachments.get("att_doesnotexist")
    assert refused.value.status == 404
    with pytest.raises(PostroomError) as refused:
        ann.attachments.get_upload_url("big.bin", "application/octet-stream", 10**12)
    assert refused.value.status == 413


def test_agentmail_client_imports_from_any_directory(tmp_path: Path) -> None:
    """`pip install -e .` puts the top-level module on the path, as seed 000 imports it."""
    code = ("import agentmail_client as m, daemon.client as c; "
            "assert m.Client is c.Client and m.AgentMailError is c.PostroomError; "
            "assert m.OutboundAttachment is c.OutboundAttachment")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                   timeout=60)
