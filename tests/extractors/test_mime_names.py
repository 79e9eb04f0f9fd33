"""Attachment names in every encoding mail uses, and unknown charsets anywhere: never an error,
always a defect. (test_mime_filenames.py covers the common cases and the safe-name rules.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from extractors import Limits, Part, extract_message
from extractors.filenames import safe_file_name

Build = Callable[..., bytes]
UNKNOWN = "x-no-such-charset"


def _only_part(one_attachment: Build, header: str) -> Part:
    [part] = extract_message(one_attachment(header), Limits()).attachments
    return part


@pytest.mark.parametrize(
    ("header", "name", "defects"),
    [
        # RFC 2231: charset and language, continuations, percent-encoding errors.
        ("Content-Disposition: attachment; filename*=utf-8'en'%E2%82%AC.txt", "€.txt", ()),
        ("Content-Disposition: attachment; filename*=''%E2%82%AC.txt", "€.txt", ()),
        (
            "Content-Disposition: attachment; filename*0*=iso-8859-1'fr'caf%E9; filename*1=.txt",
            "café.txt",
            (),
        ),
        ("Content-Disposition: attachment; filename*1=b.txt; filename*0=a", "ab.txt", ()),
        ("Content-Disposition: attachment; filename*0=a; filename*2=c.txt", "a", ()),
        ("Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%ZZ.txt", "€%ZZ.txt", ()),
        (
            "Content-Disposition: attachment; filename*0*=utf-8''a%; filename*1*=%4.txt",
            "a%%4.txt",
            (),
        ),
        (
            "Content-Disposition: attachment; filename*=utf-8''%E2%82.txt",
            "\ufffd.txt",
            ("file name: charset: invalid utf-8 bytes replaced",),
        ),
        (
            f"Content-Disposition: attachment; filename*={UNKNOWN}''caf%C3%A9.txt",
            "café.txt",
            (f"file name: charset: unknown '{UNKNOWN}'",),
        ),
        (
            f"Content-Disposition: attachment; filename*={UNKNOWN}''caf%E9.txt",
            "café.txt",
            (f"file name: charset: unknown '{UNKNOWN}'",),
        ),
        # RFC 2047: mixed charsets, unknown charsets, broken words.
        (
            'Content-Disposition: attachment; filename="=?utf-8?Q?caf=C3=A9?= and '
            '=?iso-8859-1?Q?=E9t=E9?=.txt"',
            "café and été.txt",
            (),
        ),
        (
            f'Content-Disposition: attachment; filename="=?{UNKNOWN}?Q?caf=E9?=.txt"',
            "café.txt",
            (f"file name: charset: unknown '{UNKNOWN}'", "file name: charset: decoded as latin-1"),
        ),
        (
            'Content-Disposition: attachment; filename="=?utf-8?Q?half a word.txt"',
            "=?utf-8?Q?half a word.txt",  # kept as sent, made safe below
            (),
        ),
        ('Content-Disposition: attachment; filename="=?utf-8?B?###?=report.txt"', "report.txt", ()),
        # Raw 8-bit: UTF-8, then the part's charset, then Latin-1 (which never fails).
        ('Content-Type: application/pdf; charset=koi8-r; name="naïve.pdf"', "naïve.pdf", ()),
        (
            'Content-Type: application/pdf; charset=iso-8859-7; name="\udce1\udce2.pdf"',
            "αβ.pdf",
            (),
        ),
        ('Content-Type: application/pdf; name="caf\udce9.pdf"', "café.pdf", ()),
        (
            f'Content-Type: application/pdf; charset={UNKNOWN}; name="caf\udce9.pdf"',
            "café.pdf",
            (f"file name: charset: unknown '{UNKNOWN}', decoded as latin-1",),
        ),
    ],
)
def test_name_is_decoded_and_charset_trouble_is_a_defect(
    one_attachment: Build, header: str, name: str, defects: tuple[str, ...]
) -> None:
    part = _only_part(one_attachment, header)
    assert part.original_file_name == name
    assert part.defects == defects


@pytest.mark.parametrize(
    ("header", "safe"),
    [
        ("Content-Disposition: attachment; filename*=utf-8''..%2F..%2Fetc%2Fpasswd", "passwd"),
        ('Content-Type: application/pdf; name="=?utf-8?Q?..=5C..=5Cwin.ini?="', "win.ini"),
        ('Content-Type: application/pdf; name="=?utf-8?Q?a=0D=0Ab=00=1B.pdf?="', "a b.pdf"),
        ("Content-Disposition: attachment; filename*=utf-8''%E2%80%AEfdp.exe", "fdp.exe"),
        ('Content-Disposition: attachment; filename="..."', "part-0.txt"),
        ('Content-Disposition: attachment; filename=".bashrc"', "bashrc"),
        ("Content-Disposition: attachment; filename*=utf-8''CON.txt", "_CON.txt"),
        ('Content-Disposition: attachment; filename="aux"', "_aux"),
        ('Content-Disposition: attachment; filename="lpt¹.log"', "_lpt¹.log"),
        ('Content-Disposition: attachment; filename="file.txt:stream"', "file.txt_stream"),
    ],
)
def test_decoded_name_is_made_safe(one_attachment: Build, header: str, safe: str) -> None:
    assert _only_part(one_attachment, header).file_name == safe


@pytest.mark.parametrize(
    ("sent", "kept_end"),
    [
        ("😀" * 100, "😀"),  # 400 bytes of 4-byte characters: cut between characters
        ("a" * 254 + "😀.pdf", "a.pdf"),  # the extension kept, the emoji not split
        ("é" * 300 + "." + "x" * 20, "é"),  # an "extension" too long to be one
    ],
)
def test_long_name_fits_255_utf8_bytes_without_splitting_a_character(
    sent: str, kept_end: str
) -> None:
    safe = safe_file_name(sent, 0, "application/octet-stream")
    assert len(safe.encode("utf-8")) <= 255
    assert safe.endswith(kept_end)
    assert sent.startswith(safe.removesuffix(kept_end)[:10])


def test_unknown_charset_in_headers_is_decoded_with_a_defect() -> None:
    raw = (
        f"Subject: =?{UNKNOWN}?Q?caf=C3=A9?=\r\n"
        f"From: =?{UNKNOWN}?B?w6k=?= <a@example.com>\r\n\r\nbody"
    ).encode()
    result = extract_message(raw, Limits())
    assert result.headers.subject == "café"
    assert result.headers.from_ == "é <a@example.com>"
    assert f"subject: charset: unknown '{UNKNOWN}'" in result.defects
    assert f"from: charset: unknown '{UNKNOWN}'" in result.defects


def test_unknown_charset_in_a_forwarded_message_subject_never_raises(
    multipart: Build, part: Build
) -> None:
    inner = f"Subject: =?{UNKNOWN}?Q?r=E9sum=E9?=\r\n\r\ntext".encode()
    raw = multipart(
        part("Content-Type: text/plain", b"b"), part("Content-Type: message/rfc822", inner)
    )
    [eml] = extract_message(raw, Limits()).attachments
    assert eml.file_name == "résumé.eml"


@pytest.mark.parametrize("charset", [UNKNOWN, "base64", "x" * 500, "utf-8\x00", "idna"])
def test_unknown_or_unusable_charset_in_a_body_never_raises(charset: str) -> None:
    raw = b"Content-Type: text/plain; charset=\"" + charset.encode() + b"\"\r\n\r\ncaf\xc3\xa9"
    result = extract_message(raw, Limits())
    assert result.text_body is not None and result.text_body.text == "café"
    assert result.text_body.defects != ()
