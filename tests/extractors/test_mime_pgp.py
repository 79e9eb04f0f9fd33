"""OpenPGP recognition: ciphertext formats, signed content a real gpg verifies, the manifest.

Signatures are made and checked by the machine's gpg in a throwaway GNUPGHOME: the signed
content must be byte-exact, which only a real verifier proves.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import quopri
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from extractors import Encryption, Extraction, Limits, ManifestEntry, extract_message
from extractors.pgp import MAX_MANIFEST_BYTES, MAX_MANIFEST_ENTRIES, signer_address

Build = Callable[..., bytes]
Gpg = Callable[..., subprocess.CompletedProcess[bytes]]

ARMORED = b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA1234\r\n-----END PGP MESSAGE-----\r\n"
PUBLIC_KEY = (b"-----BEGIN PGP PUBLIC KEY BLOCK-----\r\n\r\nmDMEZ\r\n"
              b"-----END PGP PUBLIC KEY BLOCK-----\r\n")
SIGNATURE = b"-----BEGIN PGP SIGNATURE-----\r\n\r\niHUEA\r\n-----END PGP SIGNATURE-----\r\n"
# Hand-made packet starts: old-format SKESK (tag 3, one length octet) as `gpg --symmetric`
# writes it, new-format SEIPD (tag 18), and an old-format public key (tag 6).
SKESK = b"\x8c\x0d\x04\x09\x03\x02" + bytes(10) + b"\xd2\x36\x01" + bytes(54)
SEIPD = b"\xd2\x05\x01abcd"
KEY_PACKET = b"\x99\x00\x05\x04abcd"
OPENPGP_ARMORED = Encryption("openpgp", "armored")
OPENPGP_BINARY = Encryption("openpgp", "binary")
SIGNED_TYPE = 'multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"'

needs_gpg = pytest.mark.skipif(shutil.which("gpg") is None, reason="needs the gpg binary")


@pytest.fixture(scope="module")
def gpg() -> Iterator[Gpg]:
    """Run gpg in a throwaway home holding one ed25519 signing key for t@example.org."""
    # A short path: gpg-agent's socket lives in the home, and socket paths are bounded.
    home = tempfile.mkdtemp(prefix="pgp")
    env = {**os.environ, "GNUPGHOME": home}

    def run(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["gpg", "--batch", "--quiet", *args], input=data, env=env,
                              capture_output=True, timeout=60, check=False)

    made = run("--passphrase", "", "--quick-gen-key", "T <t@example.org>", "ed25519", "sign",
               "never")
    assert made.returncode == 0, made.stderr
    yield run
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True,
                   timeout=60, check=False)
    shutil.rmtree(home, ignore_errors=True)


def _sign(gpg: Gpg, content: bytes) -> bytes:
    signed = gpg("--armor", "--detach-sign", "--local-user", "t@example.org", data=content)
    assert signed.returncode == 0, signed.stderr
    return signed.stdout


def _verifies(gpg: Gpg, tmp_path: Path, content: bytes, signature: bytes | None = None) -> bool:
    data = tmp_path / "content"
    data.write_bytes(content)
    if signature is None:  # a cleartext signature holds its own
        return gpg("--verify", str(data)).returncode == 0
    sig = tmp_path / "content.sig"
    sig.write_bytes(signature)
    return gpg("--verify", str(sig), str(data)).returncode == 0


def _encryption_is_consistent(result: Extraction) -> bool:
    return all(p.encrypted == (p.encryption is not None) for p in result.attachments)


# --- which parts are ciphertext, and in which format ------------------------------------------


@pytest.mark.parametrize(
    ("headers", "data", "expected"),
    [
        ('Content-Type: application/octet-stream; name="msg.asc"', ARMORED, OPENPGP_ARMORED),
        ('Content-Type: text/plain; name="note.txt"', b"\r\n  " + ARMORED, OPENPGP_ARMORED),
        ('Content-Type: application/octet-stream; name="backup.tar.gpg"', b"\x85",
         OPENPGP_BINARY),
        ('Content-Type: application/octet-stream; name="data.pgp"', b"unreadable",
         OPENPGP_BINARY),
        ('Content-Type: application/octet-stream; name="blob.bin"', SKESK, OPENPGP_BINARY),
        ('Content-Type: application/octet-stream; name="blob.bin"', SEIPD, OPENPGP_BINARY),
        ('Content-Type: application/pgp-encrypted; name="msg"', ARMORED, OPENPGP_ARMORED),
        ('Content-Type: application/pgp-encrypted; name="msg"', b"\x85\x01", OPENPGP_BINARY),
        ('Content-Type: application/pgp-keys; name="key.asc"', PUBLIC_KEY, None),
        ('Content-Type: application/octet-stream; name="key.asc"', PUBLIC_KEY, None),
        ('Content-Type: application/pgp-signature; name="signature.asc"', SIGNATURE, None),
        ('Content-Type: application/octet-stream; name="pubring.gpg"', KEY_PACKET, None),
        ('Content-Type: application/octet-stream; name="signed.gpg"', SIGNATURE, None),
        # One tag octet without a name or type to go by is not enough.
        ('Content-Type: application/octet-stream; name="photo.raw"', b"\x85\x01\x02\x03",
         None),
        ('Content-Type: application/octet-stream; name="x.bin"', b"\xd2\x05\x07abcd", None),
        ('Content-Type: application/pgp-encrypted', b"Version: 1\r\n", None),
    ],
)
def test_an_attachment_is_flagged_with_its_encryption_format_only_when_it_is_ciphertext(
    one_attachment: Build, headers: str, data: bytes, expected: Encryption | None
) -> None:
    result = extract_message(one_attachment(headers, data), Limits())
    [attachment] = result.attachments
    assert (attachment.encrypted, attachment.encryption) == (expected is not None, expected)
    assert result.pgp is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(ARMORED, OPENPGP_ARMORED), (b"\x01\x02 anything", OPENPGP_BINARY)],
    ids=["armored", "binary"],
)
def test_a_pgp_mime_payload_is_openpgp_ciphertext_and_its_control_part_is_not(
    multipart: Build, part: Build, payload: bytes, expected: Encryption
) -> None:
    raw = multipart(part("Content-Type: application/pgp-encrypted", b"Version: 1\r\n"),
                    part("Content-Type: application/octet-stream", payload),
                    subtype="encrypted")
    result = extract_message(raw, Limits())
    assert [(p.encrypted, p.encryption) for p in result.attachments] == [
        (False, None), (True, expected)]
    assert result.pgp == "encrypted"


def test_smime_enveloped_data_is_binary_smime() -> None:
    raw = (
        b"Subject: secret\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n"
    )
    [blob] = extract_message(raw, Limits()).attachments
    assert (blob.encrypted, blob.encryption) == (True, Encryption("smime", "binary"))


def test_real_symmetric_gpg_output_is_recognised_without_a_hint(
    gpg: Gpg, one_attachment: Build
) -> None:
    encrypted = gpg("--passphrase", "x", "--pinentry-mode", "loopback", "--symmetric",
                    data=b"secret")
    assert encrypted.returncode == 0, encrypted.stderr
    raw = one_attachment('Content-Type: application/octet-stream; name="blob"\r\n'
                         "Content-Transfer-Encoding: base64",
                         base64.encodebytes(encrypted.stdout))
    [attachment] = extract_message(raw, Limits()).attachments
    assert attachment.encryption == OPENPGP_BINARY


# --- PGP/MIME signed content (RFC 3156 §5) ----------------------------------------------------

QP_CONTENT = (
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Caf=C3=A9 at noon.=20\r\n"
    b"From the signer, with a soft =\r\n"
    b"line break and a trailing blank=20\r\n"
)
NESTED_CONTENT = (
    b'Content-Type: multipart/mixed; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"see the file\r\n"
    b"--inner\r\n"
    b'Content-Type: application/octet-stream; name="a.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAw==\r\n"
    b"--inner--\r\n"
)


def _pgp_mime(content: bytes, signature: bytes, *, preamble: bytes = b"",
              signature_encoding: str | None = None) -> bytes:
    """A PGP/MIME signed message as MUAs write it: CRLF, the signature as a second part."""
    if signature_encoding == "base64":
        signature = base64.encodebytes(signature).replace(b"\n", b"\r\n")
    encoding = (f"Content-Transfer-Encoding: {signature_encoding}\r\n".encode()
                if signature_encoding else b"")
    return (
        b"From: T <T@Example.org>\r\n"
        b"To: agent@example.net\r\n"
        b"Subject: signed\r\n"
        b"MIME-Version: 1.0\r\n"
        + f'Content-Type: {SIGNED_TYPE};\r\n boundary="sig-b"\r\n'.encode()
        + b"\r\n"
        + preamble
        + b"--sig-b\r\n"
        + content
        + b"\r\n--sig-b\r\n"
        + b'Content-Type: application/pgp-signature; name="signature.asc"\r\n'
        + b"Content-Description: OpenPGP digital signature\r\n"
        + encoding
        + b"\r\n"
        + signature
        + b"\r\n--sig-b--\r\n"
    )


@needs_gpg
@pytest.mark.parametrize("line_ending", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("preamble", [b"", b"This is an OpenPGP/MIME signed message.\r\n"],
                         ids=["no-preamble", "preamble"])
@pytest.mark.parametrize("content", [QP_CONTENT, NESTED_CONTENT], ids=["qp", "nested"])
def test_pgp_mime_signed_content_verifies_with_gpg(
    gpg: Gpg, tmp_path: Path, line_ending: bytes, preamble: bytes, content: bytes
) -> None:
    signature = _sign(gpg, content)
    raw = _pgp_mime(content, signature, preamble=preamble).replace(b"\r\n", line_ending)
    result = extract_message(raw, Limits())
    assert result.signed is not None
    assert (result.signed.kind, result.signed.signer) == ("pgp-mime", "t@example.org")
    assert result.signed.content == content
    assert result.signed.signature is not None
    assert _verifies(gpg, tmp_path, result.signed.content, result.signed.signature)
    assert result.pgp == "signed"


@needs_gpg
def test_a_base64_signature_part_is_decoded_and_still_verifies(gpg: Gpg, tmp_path: Path) -> None:
    signature = _sign(gpg, QP_CONTENT)
    result = extract_message(_pgp_mime(QP_CONTENT, signature, signature_encoding="base64"),
                             Limits())
    assert result.signed is not None and result.signed.signature == signature
    assert _verifies(gpg, tmp_path, result.signed.content, signature)


@needs_gpg
def test_content_changed_after_signing_does_not_verify(gpg: Gpg, tmp_path: Path) -> None:
    signature = _sign(gpg, QP_CONTENT)
    raw = _pgp_mime(QP_CONTENT.replace(b"noon", b"nine"), signature)
    result = extract_message(raw, Limits())
    assert result.signed is not None and result.signed.signature is not None
    assert not _verifies(gpg, tmp_path, result.signed.content, result.signed.signature)


@needs_gpg
def test_a_signed_body_inside_multipart_mixed_is_found_too(gpg: Gpg, tmp_path: Path) -> None:
    signed = _pgp_mime(QP_CONTENT, _sign(gpg, QP_CONTENT))
    head, _, body = signed.partition(b"MIME-Version: 1.0\r\n")
    inner = body.replace(b"\r\n boundary", b" boundary")  # its Content-Type and body
    raw = (
        head + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        b"--outer\r\n" + inner + b"\r\n--outer\r\n"
        b'Content-Type: text/plain; name="x.txt"\r\n\r\nx\r\n--outer--\r\n'
    )
    result = extract_message(raw, Limits())
    assert result.signed is not None and result.signed.signature is not None
    assert _verifies(gpg, tmp_path, result.signed.content, result.signed.signature)


def test_signed_content_is_taken_from_the_top_message_only(multipart: Build, part: Build) -> None:
    inner = _pgp_mime(b"Content-Type: text/plain\r\n\r\nhi", SIGNATURE)
    raw = multipart(part("Content-Type: text/plain", b"fwd"),
                    part("Content-Type: message/rfc822", inner))
    result = extract_message(raw, Limits())
    assert (result.signed, result.pgp) == (None, None)


def test_a_multipart_signed_without_its_signature_part_keeps_the_content() -> None:
    raw = (
        f"From: t@example.org\r\nContent-Type: {SIGNED_TYPE}; boundary=b\r\n\r\n".encode()
        + b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n"
    )
    result = extract_message(raw, Limits())
    assert result.signed is not None
    assert (result.signed.content, result.signed.signature) == (
        b"Content-Type: text/plain\r\n\r\nhi", None)
    assert "multipart/signed: no signature part" in result.defects


# --- cleartext signatures ---------------------------------------------------------------------


@needs_gpg
@pytest.mark.parametrize(
    ("charset", "encoding"),
    [("utf-8", "8bit"), ("iso-8859-1", "quoted-printable")],
)
def test_an_inline_cleartext_signature_verifies_with_gpg(
    gpg: Gpg, tmp_path: Path, charset: str, encoding: str
) -> None:
    clearsigned = gpg("--clearsign", "--local-user", "t@example.org",
                      data="Déjà vu, signed.\n- a dashed line\n".encode())
    assert clearsigned.returncode == 0, clearsigned.stderr
    text = ("Hello,\n\n" + clearsigned.stdout.decode() + "\nbye\n").replace("\n", "\r\n")
    body = text.encode(charset)
    if encoding == "quoted-printable":
        body = quopri.encodestring(body)  # keeps the CRLFs as they are
    raw = (
        b"From: Tee <t@example.org>\r\nSubject: inline\r\n"
        + f"Content-Type: text/plain; charset={charset}\r\n".encode()
        + f"Content-Transfer-Encoding: {encoding}\r\n\r\n".encode()
        + body
    )
    result = extract_message(raw, Limits())
    assert result.signed is not None
    assert (result.signed.kind, result.signed.signature, result.signed.signer) == (
        "inline", None, "t@example.org")
    assert result.signed.content.startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")
    assert result.signed.content.rstrip().endswith(b"-----END PGP SIGNATURE-----")
    assert _verifies(gpg, tmp_path, result.signed.content)
    assert result.pgp == "signed"


def test_text_without_a_whole_cleartext_block_is_not_signed() -> None:
    raw = (b"Subject: quote\r\n\r\n> -----BEGIN PGP SIGNED MESSAGE-----\r\n"
           b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nno end\r\n")
    result = extract_message(raw, Limits())
    assert (result.signed, result.pgp) == (None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("T <T@Example.org>", "t@example.org"),
        ("t@example.org", "t@example.org"),
        ('"Doe, Jane" <jane@example.org>', "jane@example.org"),
        ("jane@example.org (Jane, at work)", "jane@example.org"),
        ("=?utf-8?q?Evil_=3Cevil@example.org=3E?= <real@example.org>", "real@example.org"),
        ("=?utf-8?q?Evil_<evil@example.org>?= <real@example.org>", None),
        ('"x@evil.example" <real@example.org>', "real@example.org"),
        ("<@relay.example:user@example.org>", "user@example.org"),
        ("a@example.org, b@example.org", None),
        ("Team: a@example.org;", None),
        ("just a name", None),
        ("<a@example.org> <b@example.org>", None),
        ('"unterminated <a@example.org>', None),
        ("", None),
        (None, None),
    ],
)
def test_signer_is_the_single_from_address_never_one_in_a_display_name(
    value: str | None, expected: str | None
) -> None:
    assert signer_address(value) == expected


# --- the X-AgentMail-Attachments manifest (SPEC §8) -------------------------------------------


def _with_manifest(value: str | bytes, *names: str) -> bytes:
    raw_value = value.encode() if isinstance(value, str) else value
    parts = b"".join(
        b"--b\r\n" + f'Content-Type: application/octet-stream; name="{name}"\r\n\r\n'.encode()
        + b"data-" + name.encode() + b"\r\n"
        for name in names
    )
    return (
        b"From: a@example.org\r\nX-AgentMail-Attachments: " + raw_value + b"\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n" + parts + b"--b--\r\n"
    )


def test_a_manifest_array_is_exposed_and_marks_its_encrypted_attachment() -> None:
    manifest = json.dumps([
        {"file_name": "report.pdf", "content_type": "Application/PDF", "encrypted": False},
        {"file_name": "secret.bin", "content_type": "application/octet-stream",
         "encrypted": True, "encryption": {"algorithm": "openpgp", "format": "binary"},
         "extra": "ignored"},
    ])
    result = extract_message(_with_manifest(manifest, "report.pdf", "secret.bin"), Limits())
    assert result.manifest == (
        ManifestEntry("report.pdf", "application/pdf", False, None),
        ManifestEntry("secret.bin", "application/octet-stream", True, OPENPGP_BINARY),
    )
    assert [(p.file_name, p.encrypted, p.encryption) for p in result.attachments] == [
        ("report.pdf", False, None), ("secret.bin", True, OPENPGP_BINARY)]
    assert result.defects == ()


def test_a_single_manifest_object_with_string_flags_stands_for_an_array_of_one() -> None:
    manifest = '{"file_name": "notes.txt.asc", "encrypted": "TRUE"}'
    result = extract_message(_with_manifest(manifest, "notes.txt.asc"), Limits())
    assert result.manifest == (ManifestEntry("notes.txt.asc", None, True, None),)
    [attachment] = result.attachments
    assert (attachment.encrypted, attachment.encryption) == (True, OPENPGP_ARMORED)
    assert _encryption_is_consistent(result)


def test_a_folded_rfc2047_encoded_manifest_is_unfolded_and_decoded() -> None:
    encoded = base64.b64encode(
        json.dumps([{"file_name": "résumé.pdf", "encrypted": True}]).encode()).decode()
    half = len(encoded) // 2 // 4 * 4
    value = f"=?utf-8?b?{encoded[:half]}?=\r\n =?utf-8?b?{encoded[half:]}?="
    result = extract_message(_with_manifest(value, "résumé.pdf"), Limits())
    assert result.manifest == (ManifestEntry("résumé.pdf", None, True, None),)
    assert result.attachments[0].encrypted


def test_a_folded_json_manifest_is_unfolded() -> None:
    value = '[{"file_name": "a.txt",\r\n\t"encrypted": true}]'
    result = extract_message(_with_manifest(value, "a.txt"), Limits())
    assert result.manifest == (ManifestEntry("a.txt", None, True, None),)


@pytest.mark.parametrize(
    ("value", "defect"),
    [
        ('[{"file_name": "a.txt"', "x-agentmail-attachments: not JSON"),
        ("a.txt, b.txt", "x-agentmail-attachments: not JSON"),
        ('"a.txt"', "x-agentmail-attachments: not a JSON array of objects"),
        ("42", "x-agentmail-attachments: not a JSON array of objects"),
        ('["a.txt", "b.txt"]', "x-agentmail-attachments: not a JSON array of objects"),
        ("[" * 5000 + "]" * 5000, "x-agentmail-attachments: not JSON"),
    ],
)
def test_a_malformed_manifest_is_one_defect_and_no_manifest(value: str, defect: str) -> None:
    result = extract_message(_with_manifest(value, "a.txt"), Limits())
    assert result.manifest is None
    assert result.defects == (defect,)
    assert [p.encrypted for p in result.attachments] == [False]


def test_manifest_entries_without_a_usable_file_name_are_skipped_with_a_defect() -> None:
    value = json.dumps([{"file_name": "a.txt"}, {"content_type": "text/plain"},
                        {"file_name": "  "}, {"file_name": 7}, "b.txt"])
    result = extract_message(_with_manifest(value, "a.txt"), Limits())
    assert result.manifest == (ManifestEntry("a.txt", None, None, None),)
    assert result.defects == (
        "x-agentmail-attachments: 4 entries without a usable file_name skipped "
        "(entry 1, 2, 3, 4)",)


def test_manifest_entries_matching_no_attachment_are_named_in_a_defect() -> None:
    value = json.dumps([{"file_name": "a.txt", "encrypted": True},
                        {"file_name": "missing-" + "x" * 300 + ".pdf", "encrypted": True}])
    result = extract_message(_with_manifest(value, "a.txt"), Limits())
    assert result.manifest is not None
    assert len(result.manifest[1].file_name) == 255
    assert [p.encrypted for p in result.attachments] == [True]
    assert result.defects == (
        f"x-agentmail-attachments: no attachment named {'missing-' + 'x' * 52!r}",)


def test_manifest_names_match_exactly_first_then_ignoring_case_each_attachment_once() -> None:
    value = json.dumps([{"file_name": "REPORT.pdf", "encrypted": True},
                        {"file_name": "report.pdf"},
                        {"file_name": "Report.PDF", "encrypted": True}])
    result = extract_message(_with_manifest(value, "report.pdf", "Report.PDF"), Limits())
    # "report.pdf" and "Report.PDF" match exactly; "REPORT.pdf" finds no attachment left.
    assert [(p.file_name, p.encrypted) for p in result.attachments] == [
        ("report.pdf", False), ("Report.PDF", True)]
    assert result.defects == ("x-agentmail-attachments: no attachment named 'REPORT.pdf'",)
    lowered = extract_message(_with_manifest('{"file_name": "REPORT.PDF", "encrypted": true}',
                                             "report.pdf"), Limits())
    assert [p.encrypted for p in lowered.attachments] == [True]
    assert lowered.defects == ()


def test_the_bytes_outrank_the_manifest() -> None:
    value = json.dumps([{"file_name": "key.asc", "encrypted": False}])
    raw = _with_manifest(value, "key.asc").replace(b"data-key.asc", ARMORED.strip())
    [attachment] = extract_message(raw, Limits()).attachments
    assert (attachment.encrypted, attachment.encryption) == (True, OPENPGP_ARMORED)


def test_a_manifest_of_2000_entries_is_read_to_1000() -> None:
    value = json.dumps([{"file_name": f"f{n}"} for n in range(2000)], separators=(",", ":"))
    assert len(value) < MAX_MANIFEST_BYTES
    result = extract_message(_with_manifest(value, "f0", "f1500"), Limits())
    assert result.manifest is not None and len(result.manifest) == MAX_MANIFEST_ENTRIES
    assert result.defects[0] == "x-agentmail-attachments: 1000 entries beyond 1000 ignored"
    assert result.defects[1] == "x-agentmail-attachments: no attachment named 'f1'"
    assert result.defects[-1] == "x-agentmail-attachments: 989 more entries match no attachment"


def test_a_manifest_longer_than_64_kib_is_ignored_with_a_defect() -> None:
    value = json.dumps([{"file_name": "x" * 200} for _ in range(400)])
    assert len(value) > MAX_MANIFEST_BYTES
    result = extract_message(_with_manifest(value, "a.txt"), Limits())
    assert result.manifest is None
    assert result.defects == ("x-agentmail-attachments: longer than 65536 bytes, ignored",)


def test_a_message_without_a_manifest_has_none(one_attachment: Build) -> None:
    result = extract_message(one_attachment("Content-Type: text/plain; name=a.txt"), Limits())
    assert (result.manifest, result.signed) == (None, None)


def test_the_new_records_survive_pickling_for_the_worker_process() -> None:
    raw = _with_manifest('{"file_name": "a.txt", "encrypted": true}', "a.txt")
    raw = raw.replace(b"Content-Type: multipart/mixed", f"Content-Type: {SIGNED_TYPE}".encode())
    result = extract_message(raw, Limits())
    assert result.signed is not None and result.manifest is not None
    assert pickle.loads(pickle.dumps(result)) == result
