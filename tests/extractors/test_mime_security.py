"""Signed and encrypted mail: signed content stays readable, ciphertext is kept and flagged."""

from __future__ import annotations

from collections.abc import Callable

from extractors import Limits, extract_message

Build = Callable[..., bytes]

ARMORED = b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA1234\r\n-----END PGP MESSAGE-----\r\n"


def _with_type(message: bytes, content_type: str) -> bytes:
    """Replace the Content-Type line that the multipart builder writes."""
    head, _, rest = message.partition(b"Content-Type: ")
    _, _, after = rest.partition(b"\r\n")
    return head + b"Content-Type: " + content_type.encode() + b"\r\n" + after


def test_pgp_mime_encrypted_payload_is_one_opaque_part_flagged_encrypted(
    multipart: Build, part: Build
) -> None:
    raw = _with_type(
        multipart(
            part("Content-Type: application/pgp-encrypted", b"Version: 1\r\n"),
            part('Content-Type: application/octet-stream; name="encrypted.asc"', ARMORED),
            subtype="encrypted",
        ),
        'multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"',
    )
    result = extract_message(raw, Limits())
    control, payload = result.attachments
    assert (control.content_type, control.encrypted) == ("application/pgp-encrypted", False)
    assert payload.encrypted and payload.data == ARMORED
    assert payload.file_name == "encrypted.asc"
    assert (result.pgp, result.smime) == ("encrypted", None)
    assert result.text_body is None


def test_pgp_signed_message_keeps_its_body_its_attachments_and_the_signature(
    multipart: Build, part: Build
) -> None:
    signed_content = multipart(
        part("Content-Type: text/plain", b"signed body"),
        part('Content-Type: application/pdf; name="a.pdf"', b"%PDF-1.4 x"),
        boundary="inner",
    ).partition(b"\r\n")[2]  # drop the Subject line: the signed entity is a bare MIME entity
    raw = _with_type(
        multipart(
            signed_content,
            part('Content-Type: application/pgp-signature; name="signature.asc"',
                 b"-----BEGIN PGP SIGNATURE-----\r\nxx\r\n-----END PGP SIGNATURE-----"),
            subtype="signed",
        ),
        'multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; boundary="b"',
    )
    result = extract_message(raw, Limits())
    assert result.text_body is not None and result.text_body.text == "signed body"
    assert [(p.path, p.file_name, p.encrypted) for p in result.attachments] == [
        ("1.2", "a.pdf", False),
        ("2", "signature.asc", False),
    ]
    assert (result.pgp, result.smime) == ("signed", None)


def test_smime_enveloped_data_is_flagged_encrypted_and_the_message_says_smime() -> None:
    raw = (
        b"Subject: secret\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n"
    )
    result = extract_message(raw, Limits())
    [blob] = result.attachments
    assert (blob.file_name, blob.encrypted, blob.path) == ("smime.p7m", True, "1")
    assert (result.pgp, result.smime) == (None, "encrypted")


def test_smime_signed_data_is_signed_not_encrypted() -> None:
    raw = (
        b"Subject: signed\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n"
    )
    result = extract_message(raw, Limits())
    assert [p.encrypted for p in result.attachments] == [False]
    assert result.smime == "signed"


def test_smime_detached_signature_marks_the_message_signed(multipart: Build, part: Build) -> None:
    raw = _with_type(
        multipart(
            part("Content-Type: text/plain", b"hello"),
            part("Content-Type: application/pkcs7-signature; name=smime.p7s", b"MIAG"),
            subtype="signed",
        ),
        'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary=b',
    )
    result = extract_message(raw, Limits())
    assert result.smime == "signed" and result.pgp is None
    assert [p.file_name for p in result.attachments] == ["smime.p7s"]


def test_armored_or_gpg_files_anywhere_are_flagged_encrypted(one_attachment: Build) -> None:
    armored = extract_message(
        one_attachment('Content-Type: text/plain; name="note.txt"', ARMORED), Limits())
    gpg = extract_message(
        one_attachment('Content-Type: application/octet-stream; name="backup.tar.gpg"', b"\x85"),
        Limits())
    plain = extract_message(
        one_attachment('Content-Type: text/plain; name="plain.txt"', b"nothing secret"), Limits())
    assert [p.encrypted for r in (armored, gpg, plain) for p in r.attachments] == [
        True, True, False]
    # A PGP file attached to an ordinary message does not make the message PGP/MIME.
    assert armored.pgp is None


def test_an_encrypted_message_forwarded_inside_another_does_not_flag_the_outer_one(
    multipart: Build, part: Build
) -> None:
    inner = (
        b"Subject: inner\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        b"\r\nxx"
    )
    raw = multipart(part("Content-Type: text/plain", b"fwd"), part("Content-Type: message/rfc822",
                                                                  inner))
    result = extract_message(raw, Limits())
    assert result.smime is None
    assert [(p.path, p.encrypted, p.parent) for p in result.attachments] == [
        ("2", False, None), ("2.1", True, 0)]
