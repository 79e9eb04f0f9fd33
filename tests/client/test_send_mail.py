"""Seed 000's `send_mail` through the client against a real daemon (SPEC §12): files uploaded at
send time mixed with refs of earlier uploads, arriving byte for byte at a second local agent;
the encrypted round trip to a peer with a directory key, opened by `fetch_message(decrypt_with=…)`;
a peer without a key refused before anything is sent.

Each test runs on the local store with bob's mail also encrypted at rest (two layers for his key
to open), and on S3 with `at_rest = "off"` (the sender's layer alone).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from agentmail_client import AgentMailError, Client, OutboundAttachment
from tests.harness import Daemon, running_daemon
from tests.pgpkeys import TestKey, make_key

OUTBOUND = '[outbound]\npoll_interval = "0.2s"\nretry_base = "0.3s"\n'


@dataclass(frozen=True)
class Agent:
    name: str
    address: str
    key: str


@dataclass(frozen=True)
class Site:
    backend: str
    daemon: Daemon
    alice: Agent  # sends; no key
    bob: Agent  # has a key in the directory
    carol: Agent  # no key
    dave: Agent  # has a key too
    bob_key: TestKey
    dave_key: TestKey


def _agent(d: Daemon, name: str, pgp_key: TestKey | None = None) -> Agent:
    address = f"{name}@agents.test"
    if pgp_key is None:
        return Agent(name, address, d.add_agent(name, address)["api_key"])
    key_file = d.root / f"{name}.asc"
    key_file.write_text(pgp_key.public)
    out = json.loads(d.cli("agent", "add", name, "--address", address, "--pgp-key",
                           str(key_file), "--json").stdout)
    d.wait_for(lambda: d.rcpt_code(address) == 250, 5.0, f"RCPT of {address}")
    return Agent(name, address, out["api_key"])


@pytest.fixture(scope="module", params=["local", "s3"])
def site(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    extra = OUTBOUND
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        extra += (f'[storage]\nbackend = "s3"\nbucket = "{server.new_bucket()}"\n'
                  f'endpoint_url = "{server.endpoint_url}"\nregion = "us-east-1"\n'
                  '[encryption]\nat_rest = "off"\n')
    bob_key, dave_key = make_key("Bob <bob@agents.test>"), make_key("Dave <dave@agents.test>")
    with running_daemon(tmp_path_factory.mktemp(f"send-mail-{request.param}"),
                        extra=extra) as d:
        yield Site(request.param, d, _agent(d, "alice"), _agent(d, "bob", bob_key),
                   _agent(d, "carol"), _agent(d, "dave", dave_key), bob_key, dave_key)


@pytest.fixture
def alice(site: Site) -> Iterator[Client]:
    with Client(site.daemon.url, site.alice.key) as client:
        yield client


def _subject() -> str:
    return f"task {uuid.uuid4().hex[:12]}"


def _arrived(d: Daemon, agent: Agent, subject: str) -> dict[str, Any]:
    """The agent's copy of the message with `subject`, once extraction is done."""
    def found() -> str | None:
        with d.api(agent.key) as api:
            page = api.get("/v1/messages", params={"limit": 200}).json()["messages"]
        return next((m["id"] for m in page
                     if m["direction"] == "inbound" and m["subject"] == subject), None)

    message_id = d.wait_for(found, 30.0, f"{agent.name}'s copy of {subject!r}")
    return d.wait_message(agent.key, message_id)


def _outbound_ids(d: Daemon, agent: Agent) -> list[str]:
    with d.api(agent.key) as api:
        page = api.get("/v1/messages", params={"limit": 200}).json()["messages"]
    return [m["id"] for m in page if m["direction"] == "outbound"]


def test_a_file_and_uploaded_refs_arrive_at_another_agent_byte_for_byte(
        site: Site, alice: Client, tmp_path: Path) -> None:
    d = site.daemon
    data, report, notes = os.urandom(150_000), b"%PDF-1.7\n" + os.urandom(60_000), b"notes\n"
    (tmp_path / "on-disk-name.bin").write_bytes(data)
    (tmp_path / "report.pdf").write_bytes(report)
    uploaded = alice.upload_file(tmp_path / "report.pdf")
    put = alice.request_upload_url("notes.txt", "text/plain", len(notes))
    assert requests.put(put["upload_url"], data=notes, headers={"Content-Type": "text/plain"},
                        timeout=30).status_code in (200, 204)
    subject = _subject()

    sent = alice.send_mail(
        to={"email": site.carol.address, "name": "Carol"}, subject=subject, body="three files",
        html="<p>three files</p>", cc=[], attachments=[
            OutboundAttachment(tmp_path / "on-disk-name.bin", display_name="data.bin",
                               content_type="application/octet-stream"),
            {"id": uploaded["id"]},
            {"object_key": put["object_key"], "filename": "renamed.txt",
             "mime_type": "text/plain"}])

    assert sent["status"] == "queued" and sent["id"].startswith("msg_")
    assert [(r["address"], r["status"]) for r in sent["recipients"]] == [
        (site.carol.address, "queued")]
    with Client(d.url, site.carol.key) as carol:
        copy = carol.fetch_message(_arrived(d, site.carol, subject)["id"])
        assert [(a["file_name"], a["content_type"], a["content"])
                for a in copy["attachments"]] == [
            ("data.bin", "application/octet-stream", data),
            ("report.pdf", "application/pdf", report),
            ("renamed.txt", "text/plain", notes)]
        assert copy["text"].strip() == "three files" and "three files" in copy["html"]
        assert copy["manifest"] is None  # nothing encrypted, nothing to declare
        # The answer goes into the same thread.
        answer = carol.send_mail(site.alice.address, f"Re: {subject}", "thanks",
                                 in_reply_to=copy["id"])
    assert answer["thread_id"] == sent["thread_id"]


def test_the_encrypted_round_trip_gives_the_peer_the_plaintext_back(
        site: Site, alice: Client, tmp_path: Path) -> None:
    d = site.daemon
    pdf = b"%PDF-1.4 SECRET-PDF " + os.urandom(100_000)
    (tmp_path / "report.pdf").write_bytes(pdf)
    subject = _subject()

    sent = alice.send_mail(
        to=site.bob.address, subject=subject, body="please run the attached job SECRET-BODY",
        html="<p>please run the attached job</p>",
        attachments=[OutboundAttachment(path=str(tmp_path / "report.pdf"),
                                        display_name="report.pdf",
                                        content_type="application/pdf")],
        encrypt_body=True, encrypt_attachments=True)
    assert sent["status"] == "queued"

    view = _arrived(d, site.bob, subject)
    assert view["subject"] == subject  # the subject is never encrypted
    (att,) = view["attachments"]
    assert att["file_name"] == "report.pdf.asc" and att["encrypted"] is True
    assert att["content_type"] == "application/pgp-encrypted"
    assert view["manifest"] == [{"file_name": "report.pdf.asc",
                                 "content_type": "application/pgp-encrypted",
                                 "encrypted": True,
                                 "encryption": {"algorithm": "openpgp", "format": "armored"}}]
    assert (view["encryption"] is not None) == (site.backend == "local")  # at rest
    if site.backend == "local":  # nothing readable reached the store, on either side
        for path in (d.root / "var" / "objects").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert b"SECRET-BODY" not in data and b"SECRET-PDF" not in data, path

    with Client(d.url, site.bob.key) as bob:
        sealed = bob.fetch_message(view["id"])  # without the key: as stored
        assert "SECRET-BODY" not in sealed["text"]
        assert b"SECRET-PDF" not in sealed["attachments"][0]["content"]
        opened = bob.fetch_message(view["id"], decrypt_with=site.bob_key.private)
    assert opened["text"].strip() == "please run the attached job SECRET-BODY"
    assert opened["html"].strip() == "<p>please run the attached job</p>"
    assert opened["decrypted"] is True
    (got,) = opened["attachments"]
    assert (got["file_name"], got["content_type"], got["decrypted"]) == (
        "report.pdf", "application/pdf", True)
    assert hashlib.sha256(got["content"]).hexdigest() == hashlib.sha256(pdf).hexdigest()


def test_a_key_that_opens_nothing_is_said_so(site: Site, alice: Client) -> None:
    """What postroom sealed at rest must open (`decryption_failed`); the sender's layer may be
    for someone else, and is then left as it came with `decrypted: false`."""
    subject = _subject()
    alice.send_mail([site.bob.address], subject, "for bob only", encrypt_body=True)
    view = _arrived(site.daemon, site.bob, subject)
    stranger = make_key("Stranger <x@elsewhere.test>").private
    with Client(site.daemon.url, site.bob.key) as bob:
        if site.backend == "local":
            with pytest.raises(AgentMailError) as refused:
                bob.fetch_message(view["id"], decrypt_with=stranger)
            assert refused.value.code == "decryption_failed"
        else:
            wrong = bob.fetch_message(view["id"], decrypt_with=stranger)
            assert wrong["decrypted"] is False
            assert "-----BEGIN PGP MESSAGE-----" in wrong["text"]


def test_every_recipient_can_open_it_bcc_ones_included(site: Site, alice: Client) -> None:
    d = site.daemon
    subject = _subject()
    alice.send_mail(to=site.dave.address, bcc=site.bob.address, subject=subject,
                    body="SECRET for two", encrypt_body=True)
    for agent, key in ((site.dave, site.dave_key), (site.bob, site.bob_key)):
        view = _arrived(d, agent, subject)
        with Client(d.url, agent.key) as client:
            opened = client.fetch_message(view["id"], decrypt_with=key.private)
        assert opened["text"].strip() == "SECRET for two" and opened["decrypted"] is True


@pytest.mark.parametrize(("recipients", "status"), [
    ({"to": "carol@agents.test"}, 0),  # a local agent without a key
    ({"to": "bob@agents.test", "cc": ["carol@agents.test"]}, 0),  # one keyless among keyed
    ({"to": "bob@agents.test", "bcc": [{"email": "nobody@elsewhere.test"}]}, 404),  # unknown
])
def test_a_recipient_without_a_key_is_refused_and_nothing_is_sent(
        site: Site, alice: Client, tmp_path: Path, recipients: dict[str, Any],
        status: int) -> None:
    d = site.daemon
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 " + os.urandom(1000))
    before = _outbound_ids(d, site.alice)
    for body_too in (False, True):
        with pytest.raises(AgentMailError) as refused:
            alice.send_mail(subject="never sent", body="x",
                            attachments=[OutboundAttachment(tmp_path / "report.pdf")],
                            encrypt_body=body_too, encrypt_attachments=not body_too,
                            **recipients)
        assert (refused.value.status, refused.value.code) == (status, "no_peer_key")
    assert _outbound_ids(d, site.alice) == before


def test_a_manifest_too_long_for_a_header_is_refused_before_any_upload(
        site: Site, alice: Client, tmp_path: Path) -> None:
    path = tmp_path / ("n" * 240 + ".bin")
    path.write_bytes(b"x")
    before = _outbound_ids(site.daemon, site.alice)
    with pytest.raises(AgentMailError) as refused:
        alice.send_mail(site.bob.address, "too many", "x", encrypt_attachments=True,
                        attachments=[OutboundAttachment(path)] * 200)
    assert (refused.value.status, refused.value.code) == (0, "manifest_too_large")
    assert _outbound_ids(site.daemon, site.alice) == before


def test_encrypting_a_ref_fetches_its_bytes_and_a_ciphertext_ref_goes_as_it_is(
        site: Site, alice: Client, tmp_path: Path) -> None:
    d = site.daemon
    plain, sealed = b"plain ref " + os.urandom(5000), site.bob_key.encrypt_to_self(b"mine")
    (tmp_path / "table.csv").write_bytes(plain)
    (tmp_path / "sealed.pgp").write_bytes(sealed)
    by_id = alice.upload_file(tmp_path / "table.csv")
    as_is = alice.upload_file(tmp_path / "sealed.pgp", content_type="application/pgp-encrypted")
    subject = _subject()
    alice.send_mail(site.bob.address, subject, "two refs", encrypt_attachments=True,
                    attachments=[{"object_key": by_id["object_key"]},
                                 {"id": as_is["id"]}])
    view = _arrived(d, site.bob, subject)
    assert [a["file_name"] for a in view["attachments"]] == ["table.csv.asc", "sealed.pgp"]
    assert [m["file_name"] for m in view["manifest"]] == ["table.csv.asc", "sealed.pgp"]
    with Client(d.url, site.bob.key) as bob:
        opened = bob.fetch_message(view["id"], decrypt_with=site.bob_key.private)
    assert [(a["file_name"], a["content"]) for a in opened["attachments"]] == [
        ("table.csv", plain), ("sealed", b"mine")]


def test_send_posts_the_native_body_as_given(site: Site, alice: Client) -> None:
    subject = _subject()
    sent = alice.send({"to": [site.carol.address], "subject": subject},
                      text="native", headers={"X-Task": "7"}, idempotency_key=subject)
    again = alice.send(to=[site.carol.address], subject=subject, text="native",
                       headers={"X-Task": "7"}, idempotency_key=subject)
    assert again["id"] == sent["id"]  # the same Idempotency-Key sends once
    copy = _arrived(site.daemon, site.carol, subject)
    assert copy["text"].strip() == "native"
    assert alice.get_peer(site.bob.address)["openpgp_public_key"].startswith(
        "-----BEGIN PGP PUBLIC KEY BLOCK-----")


def test_a_missing_file_is_refused_before_anything_is_uploaded(
        site: Site, alice: Client, tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text("here")
    before = _outbound_ids(site.daemon, site.alice)
    with pytest.raises(AgentMailError) as refused:
        alice.send_mail(site.carol.address, "never sent", "x", attachments=[
            OutboundAttachment(tmp_path / "here.txt"), OutboundAttachment(tmp_path / "gone.txt")])
    assert (refused.value.status, refused.value.code) == (0, "unreadable_file")
    assert _outbound_ids(site.daemon, site.alice) == before
