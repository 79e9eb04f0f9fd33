"""The client's pieces without a daemon: the throwaway-keyring Encryptor (Bcc hidden in the
ciphertext), the manifest header within what the composer and the extractor take, recipients in
the seed's shapes, records from JSON."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.client import AgentMailError, Inbox, OutboundAttachment, SentMessage
from daemon.client.outgoing import MAX_MANIFEST_CHARS, _Plan, mailboxes, manifest_header
from daemon.openpgp import Decryptor, Encryptor, OpenPgpError
from daemon.outbound import Draft, Mailbox, compose
from extractors.pgp import read_manifest
from tests.pgpkeys import make_key


def _key_ids(ciphertext: bytes) -> list[str]:
    """The key ids of the message's public-key packets (0000000000000000: hidden)."""
    listing = subprocess.run(["gpg", "--batch", "--list-packets", "--homedir", "/nonexistent"],
                             input=ciphertext, capture_output=True, timeout=60).stdout.decode()
    return [line.rsplit("keyid ", 1)[1].strip() for line in listing.splitlines()
            if "pubkey enc packet" in line]


def test_bcc_recipients_open_the_message_without_showing_in_it(tmp_path: Path) -> None:
    shown, hidden = make_key("To <to@x.test>"), make_key("Bcc <bcc@x.test>")
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF " * 10_000)
    with Encryptor([shown.public], [hidden.public]) as enc:
        body = enc.encrypt_bytes(b"the body")
        enc.encrypt_file(source, tmp_path / "report.pdf.asc")
        assert enc.fingerprints == (shown.fingerprint, hidden.fingerprint)
    for sealed in (body, (tmp_path / "report.pdf.asc").read_bytes()):
        assert sealed.startswith(b"-----BEGIN PGP MESSAGE-----")
        ids = _key_ids(sealed)
        assert len(ids) == 2 and "0000000000000000" in ids
        assert any(shown.subkey_fingerprints[0].endswith(i) for i in ids)
        assert not any(hidden.subkey_fingerprints[0].endswith(i) for i in ids)
    for key in (shown, hidden):
        with Decryptor(key.private) as dec:
            assert dec.decrypt_bytes(body) == b"the body"
            assert dec.decrypt_bytes((tmp_path / "report.pdf.asc").read_bytes()) == \
                source.read_bytes()


def test_a_key_given_both_ways_is_not_hidden_and_the_keyring_is_removed() -> None:
    key = make_key("To <to@x.test>")
    enc = Encryptor([key.public], [key.public])
    scratch = enc._scratch
    assert _key_ids(enc.encrypt_bytes(b"x")) != ["0000000000000000"]
    enc.close()
    assert not scratch.exists()


@pytest.mark.parametrize("kind", ["garbage", "sign_only", "expired"])
def test_a_key_that_cannot_be_encrypted_to_is_refused(kind: str) -> None:
    bad = "not a key" if kind == "garbage" else make_key(
        f"{kind} <k@x.test>", sign_only=kind == "sign_only", expired=kind == "expired").public
    with pytest.raises(OpenPgpError):
        Encryptor([bad])


def _plans(count: int, name_length: int = 20) -> list[_Plan]:
    return [_Plan(f"{i:03}" + "n" * name_length + ".pdf", "application/pdf", local=Path("x"))
            for i in range(count)]


def _parsed(value: str) -> list[dict[str, object]]:
    """The manifest as the daemon reads it after composing it into a real message."""
    raw = compose(Draft(sender=Mailbox("a@x.test"), to=(Mailbox("b@x.test"),), text="t",
                        headers=(("X-AgentMail-Attachments", value),)),
                  message_id="<m@x.test>", date=datetime.now(UTC))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    entries, defects = read_manifest(raw, raw.index(b"\r\n\r\n") + 2)
    assert defects == [] and entries is not None
    return [{"file_name": e.file_name, "encrypted": e.encrypted} for e in entries]


@pytest.mark.parametrize(("count", "name_length", "with_originals"),
                         [(1, 20, True), (100, 20, True), (100, 240, False)])
def test_the_manifest_survives_composing_and_reading(count: int, name_length: int,
                                                     with_originals: bool) -> None:
    plans = _plans(count, name_length)
    value = manifest_header(plans)
    assert value.isascii() and len(value) <= MAX_MANIFEST_CHARS
    entries = json.loads(value)
    assert ("original_file_name" in entries[0]) is with_originals  # dropped when too long
    assert _parsed(value) == [{"file_name": p.file_name + ".asc", "encrypted": True}
                              for p in plans]


def test_a_manifest_no_header_can_hold_is_refused() -> None:
    with pytest.raises(AgentMailError) as refused:
        manifest_header(_plans(200, 240))
    assert (refused.value.status, refused.value.code) == (0, "manifest_too_large")


def test_recipients_take_the_seeds_shapes() -> None:
    assert mailboxes(None) == []
    assert mailboxes("a@x.test") == ["a@x.test"]
    assert mailboxes({"email": "a@x.test", "name": "A"}) == [{"email": "a@x.test", "name": "A"}]
    assert mailboxes(["a@x.test", {"email": "b@x.test"}]) == ["a@x.test", {"email": "b@x.test"}]
    with pytest.raises(TypeError):
        mailboxes([{"name": "no address"}])


def test_an_outbound_attachment_names_and_types_itself() -> None:
    assert OutboundAttachment("/tmp/r.pdf").file_name == "r.pdf"
    assert OutboundAttachment("/tmp/r.pdf").mime_type == "application/pdf"
    named = OutboundAttachment("/tmp/x", display_name="notes.txt")
    assert (named.file_name, named.mime_type) == ("notes.txt", "text/plain")
    assert OutboundAttachment("/tmp/x", content_type="image/png").mime_type == "image/png"


def test_records_expose_fields_as_attributes_and_keep_the_rest() -> None:
    sent = SentMessage.from_json({"id": "msg_1", "inbox_id": "inb_1", "status": "queued",
                                  "message_id_header": "<m@x>"})
    assert (sent.id, sent.inbox_id, sent.status, sent.thread_id) == (
        "msg_1", "inb_1", "queued", None)
    assert sent["message_id_header"] == "<m@x>" and sent.get("nope") is None
    with pytest.raises(KeyError):
        sent["nope"]
    assert Inbox.from_json({"id": "inb_1", "address": "a@x.test"}) == Inbox(
        id="inb_1", address="a@x.test")
