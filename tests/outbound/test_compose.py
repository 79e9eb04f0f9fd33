"""Composition and DKIM signing of outbound mail, read back by postroom's own extractor, by the
standard library's parser and by dkimpy's verifier against the DNS record one would publish."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import dkim
import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from daemon.outbound import (
    CompositionError,
    Draft,
    FilePart,
    Mailbox,
    compose,
    load_key,
    sign,
)
from extractors import Limits, extract_message

WHEN = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)


def _draft(**over: object) -> Draft:
    base: dict[str, object] = {"sender": Mailbox("alice@agents.test", "Alice"),
                               "to": (Mailbox("bob@example.test"),), "subject": "hello",
                               "text": "plain body"}
    base.update(over)
    return Draft(**base)  # type: ignore[arg-type]


def test_attachments_arrive_with_their_exact_bytes_and_names() -> None:
    files = [FilePart("rapport été.pdf", "application/pdf", os.urandom(70_000)),
             FilePart("data.bin", "application/octet-stream", bytes(range(256)) * 3),
             FilePart("notes.txt", "text/plain", b"line one\r\nline two\n\x00nul\r\n")]
    raw = compose(_draft(html="<p>hi</p>", attachments=tuple(files)),
                  message_id="<m1@agents.test>", date=WHEN)
    found = extract_message(raw, Limits())
    got = [(a.file_name, a.sha256) for a in found.attachments if a.disposition == "attachment"]
    assert got == [(f.file_name, hashlib.sha256(f.data).hexdigest()) for f in files]
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed.get_content_type() == "multipart/mixed"
    body = parsed.get_body(("html", "plain"))
    assert body is not None and body.get_content_type() == "text/html"
    assert b"filename*=utf-8''rapport%20%C3%A9t%C3%A9.pdf" in raw  # RFC 2231


def test_text_and_html_make_a_multipart_alternative() -> None:
    raw = compose(_draft(text="plain ✓", html="<b>rich ✓</b>"), message_id="<m@a.test>",
                  date=WHEN)
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content().strip() for p in parsed.iter_parts()] == ["plain ✓", "<b>rich ✓</b>"]


def test_headers_of_identity_and_threading() -> None:
    raw = compose(_draft(subject="Re: café", in_reply_to="<orig@x.test>",
                         references=("<root@x.test>",), headers=(("X-Agent-Run", "42"),),
                         cc=(Mailbox("carol@example.test", "Carol, C."),)),
                  message_id="<id1@agents.test>", date=WHEN)
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Message-ID"] == "<id1@agents.test>"
    assert parsed["In-Reply-To"] == "<orig@x.test>"
    assert parsed["References"] == "<root@x.test> <orig@x.test>"
    assert parsed["Subject"] == "Re: café"
    assert parsed["Cc"].addresses[0].display_name == "Carol, C."
    assert parsed["X-Agent-Run"] == "42"
    assert parsed["Date"].datetime == WHEN
    assert "Bcc" not in parsed
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")


@pytest.mark.parametrize("over", [
    {"subject": "hi\r\nBcc: victim@example.test"},
    {"subject": "hi\nX-Injected: 1"},
    {"sender": Mailbox("alice@agents.test", "A\r\nBcc: x@y.test")},
    {"to": (Mailbox("bob@example.test\r\nBcc: x@y.test"),)},
    {"headers": (("X-Ok", "v\r\nBcc: x@y.test"),)},
    {"attachments": (FilePart("a.txt\r\nContent-Type: text/html", "text/plain", b"x"),)},
    {"headers": (("Received", "from forged"),)},
    {"headers": (("DKIM-Signature", "v=1"),)},
    {"headers": (("bad name", "v"),)},
    {"subject": "x" * 1_000_000},
    {"to": (Mailbox("not-an-address"),)},
])
def test_what_would_write_a_header_of_the_senders_choosing_is_refused(over: dict[str, object]
                                                                       ) -> None:
    with pytest.raises(CompositionError):
        compose(_draft(**over), message_id="<m@a.test>", date=WHEN)


def _rsa_key(path: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def _ed25519_key(path: Path) -> str:
    seed = nacl.signing.SigningKey.generate()
    path.write_bytes(base64.b64encode(bytes(seed)) + b"\n")  # what dknewkey writes
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(bytes(seed.verify_key)).decode()}"


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_a_signature_verifies_against_the_record_one_would_publish(tmp_path: Path,
                                                                   algorithm: str) -> None:
    make = _rsa_key if algorithm == "rsa-sha256" else _ed25519_key
    selector = f"s{secrets.token_hex(3)}"
    record = make(tmp_path / "key")
    key = load_key("agents.test", selector, tmp_path / "key", algorithm)  # type: ignore[arg-type]
    raw = compose(_draft(attachments=(FilePart("a.bin", "application/octet-stream",
                                               os.urandom(5000)),)),
                  message_id="<m@agents.test>", date=WHEN)
    signed = sign(raw, "Agents.Test", [key])
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(raw)
    dns = {f"{selector}._domainkey.agents.test.".encode(): record.encode()}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return dns.get(name)

    assert dkim.verify(signed, dnsfunc=lookup)
    tampered = signed.replace(b"Subject: hello", b"Subject: hellO")
    assert not dkim.verify(tampered, dnsfunc=lookup)


def test_a_message_from_another_domain_is_not_signed(tmp_path: Path) -> None:
    _rsa_key(tmp_path / "key")
    key = load_key("agents.test", "s1", tmp_path / "key", "rsa-sha256")
    raw = compose(_draft(), message_id="<m@x.test>", date=WHEN)
    assert sign(raw, "other.test", [key]) == raw


def test_a_key_file_that_cannot_sign_stops_at_load(tmp_path: Path) -> None:
    from daemon.outbound import DkimKeyError

    (tmp_path / "key").write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\nnope\n-----END RSA "
                                   b"PRIVATE KEY-----\n")
    with pytest.raises(DkimKeyError):
        load_key("agents.test", "s1", tmp_path / "key", "rsa-sha256")
    with pytest.raises(DkimKeyError):
        load_key("agents.test", "s1", tmp_path / "missing", "ed25519-sha256")
    assert "PRIVATE" not in repr(load_key("agents.test", "s1", tmp_path / "ok", "rsa-sha256")
                                 if _rsa_key(tmp_path / "ok") else None)
