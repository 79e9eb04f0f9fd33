"""Seed 000 (the AgentMail-style SDK) run as written, on the local store and on S3: each of its
five Python snippets in a process of its own, the client constructed by a prelude (SPEC §17),
then checked through the native API: the bytes stored, downloaded or delivered are the bytes the
snippet started from. The encrypted `send_mail` goes to a second agent with an OpenPGP key in the
directory, which gets the plaintext PDF back with `fetch_message(decrypt_with=…)`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.mail import with_attachment
from tests.pgpkeys import TestKey, make_key
from tests.seeds.checks import (
    Agent,
    Site,
    add_agent,
    inbound_attachment,
    message_ids,
    new_message,
    pdf,
    sha256,
    uploaded_object,
)
from tests.seeds.run import client_prelude, run_python
from tests.seeds.snippets import snippet, substituted

pytestmark = pytest.mark.e2e

PEER_ADDRESS = "cat@agents.test"


@pytest.fixture(scope="module")
def peer_key() -> TestKey:
    return make_key(PEER_ADDRESS)


@pytest.fixture(scope="module")
def peer(site: Site, peer_key: TestKey, tmp_path_factory: pytest.TempPathFactory) -> Agent:
    """The second agent, with an OpenPGP key in the directory."""
    key_file = tmp_path_factory.mktemp("peer") / "cat.asc"
    key_file.write_text(peer_key.public)
    return add_agent(site.daemon, "cat", PEER_ADDRESS, key_file)


def _prelude(site: Site, agent: Agent) -> str:
    return client_prelude(site.daemon.url, agent.key)


def _inbound(site: Site, agent: Agent, payload: bytes) -> str:
    """A message with `report.pdf` delivered to the agent over SMTP, processed."""
    d = site.daemon
    msg_id = d.send(with_attachment(agent.address, payload), [agent.address])
    assert d.wait_message(agent.key, msg_id)["status"] == "ready"
    return msg_id


def test_the_upload_form_snippet_stores_the_file(site: Site, sender: Agent,
                                                 tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "report.bin.enc").write_bytes(data)
    ran = run_python(snippet("000-upload-form"), tmp_path, _prelude(site, sender),
                     report={"object_key": "object_key"})
    object_key = ran.reported["object_key"]
    assert object_key.startswith(f"uploads/{sender.id}/")
    assert object_key.endswith("-report.bin.enc")
    assert sha256(uploaded_object(site.daemon, sender, object_key)) == sha256(data)


def test_the_upload_download_snippet_fetches_the_upload(site: Site, sender: Agent,
                                                        tmp_path: Path) -> None:
    data = os.urandom(200_000)
    with site.daemon.api(sender.key) as api:
        r = api.post("/v1/uploads", files={"file": ("report.bin.enc", data,
                                                    "application/octet-stream")})
    assert r.status_code == 201, r.text
    code = substituted("000-upload-download", {
        "uploads/<agent_id>/<uuid>-report.bin.enc": r.json()["object_key"]})
    run_python(code, tmp_path, _prelude(site, sender))
    assert sha256((tmp_path / "report.bin.enc").read_bytes()) == sha256(data)


def test_the_inbound_status_snippet_prints_the_ready_status(site: Site, sender: Agent,
                                                            tmp_path: Path) -> None:
    payload = pdf(80_000)
    msg_id = _inbound(site, sender, payload)
    code = substituted("000-inbound-status", {"msg-abc123": msg_id})
    ran = run_python(code, tmp_path, _prelude(site, sender), report={"status": "status"})
    status = ran.reported["status"]
    assert status["status"] == "ready" and status["file_name"] == "report.pdf"
    assert status["message_id"] == msg_id and status["sha256"] == sha256(payload)
    assert "'ready'" in ran.stdout


def test_the_inbound_download_snippet_writes_the_attachment(site: Site, sender: Agent,
                                                            tmp_path: Path) -> None:
    payload = pdf(120_000)
    msg_id = _inbound(site, sender, payload)
    code = substituted("000-inbound-download", {"msg-abc123": msg_id})
    run_python(code, tmp_path, _prelude(site, sender))
    assert sha256((tmp_path / "report.pdf").read_bytes()) == sha256(payload)


# What the receiving agent runs after the seed's send (the seed names the call, shows no code).
FETCH_DECRYPTED = """\
import hashlib
message = client.fetch_message({message_id!r}, decrypt_with=open("peer-private.asc").read())
"""
FETCHED = {
    "text": "message['text']",
    "attachments": "[{'file_name': a['file_name'], 'content_type': a.get('content_type'), "
                   "'sha256': hashlib.sha256(a['content']).hexdigest()} "
                   "for a in message['attachments']]",
}


def test_the_encrypted_send_mail_snippet_round_trips_to_the_peer(
        site: Site, sender: Agent, peer: Agent, peer_key: TestKey, tmp_path: Path) -> None:
    d = site.daemon
    with d.api(sender.key) as api:
        listed = api.get(f"/v1/directory/{peer.address}").json()
    assert "BEGIN PGP PUBLIC KEY BLOCK" in listed["openpgp_public_key"]
    data = pdf(150_000)
    (tmp_path / "report.pdf").write_bytes(data)
    known = message_ids(d, peer)
    code = substituted("000-send-encrypted", {"other-agent@agents.example.com": peer.address})
    ran = run_python(code, tmp_path, _prelude(site, sender), report={"result": "result"})
    result: dict[str, Any] = ran.reported["result"]

    # What went out was encrypted by the SDK: the armored body, `report.pdf.asc` as
    # application/pgp-encrypted, and the manifest that says so.
    with d.api(sender.key) as api:
        link = api.post(f"/v1/messages/{result['id']}/raw/download")
    assert link.status_code == 200, link.text
    raw = httpx.get(link.json()["url"], timeout=30).content
    assert b"X-AgentMail-Attachments" in raw and b"application/pgp-encrypted" in raw
    assert b"report.pdf.asc" in raw and b"-----BEGIN PGP MESSAGE-----" in raw
    assert b"please run the attached job" not in raw

    view = new_message(d, peer, known)
    assert view["subject"] == "Encrypted task with file"
    status, _ = inbound_attachment(d, peer, view["id"])
    assert status["status"] == "ready" and status["encrypted"] is True

    # The peer, in a process of its own, gets the plaintext body and the very PDF back.
    peer_dir = tmp_path / "peer"
    peer_dir.mkdir()
    (peer_dir / "peer-private.asc").write_text(peer_key.private)
    fetched = run_python(FETCH_DECRYPTED.format(message_id=view["id"]), peer_dir,
                         _prelude(site, peer), report=FETCHED).reported
    assert fetched["text"].strip() == "please run the attached job"
    assert fetched["attachments"] == [{"file_name": "report.pdf",
                                       "content_type": "application/pdf",
                                       "sha256": sha256(data)}]


# The seed's promise for a peer without a key: the SDK raises AgentMailError, and sends nothing.
RUN_EXPECTING_REFUSAL = """\
from agentmail_client import AgentMailError
try:
    exec(open("send.py").read())
    refused = False
except AgentMailError:
    refused = True
"""


def test_the_encrypted_send_mail_snippet_to_a_peer_without_a_key_raises(
        site: Site, sender: Agent, recipient: Agent, tmp_path: Path) -> None:
    d = site.daemon
    (tmp_path / "report.pdf").write_bytes(pdf(10_000))
    (tmp_path / "send.py").write_text(substituted(
        "000-send-encrypted", {"other-agent@agents.example.com": recipient.address}))
    known_sent, known_received = message_ids(d, sender), message_ids(d, recipient)
    ran = run_python(RUN_EXPECTING_REFUSAL, tmp_path, _prelude(site, sender),
                     report={"refused": "refused"})
    assert ran.reported["refused"] is True
    assert message_ids(d, sender) == known_sent
    assert message_ids(d, recipient) == known_received
