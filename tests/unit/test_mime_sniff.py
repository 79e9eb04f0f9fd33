"""Sniffed content types, and the mismatches worth telling an agent about."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from extractors import Limits, extract_message
from extractors.sniff import detect_content_type, is_mismatch

Build = Callable[..., bytes]

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 16
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 30
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 57
# A PE file: "MZ", the offset of the PE header at 0x3C, then "PE\0\0" there.
PE = (
    b"MZ"
    + b"\x00" * 58
    + (0x80).to_bytes(4, "little")
    + b"\x00" * 0x40
    + b"PE\x00\x00"
    + b"\x00" * 64
)


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (PDF, "application/pdf"),
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (ZIP, "application/zip"),
        (ELF, "application/x-executable"),
        (PE, "application/vnd.microsoft.portable-executable"),
        (b"MZ is just how this text starts", "text/plain"),
        (b"plain words\r\n", "text/plain"),
        (b"", None),
    ],
)
def test_common_formats_are_recognised_from_their_first_bytes(
    data: bytes, detected: str | None
) -> None:
    assert detect_content_type(data) == detected


def test_pdf_declared_as_png_is_a_mismatch(one_attachment: Build) -> None:
    [part] = extract_message(
        one_attachment("Content-Type: image/png; name=a.png", PDF), Limits()
    ).attachments
    assert part.detected_content_type == "application/pdf"
    assert part.content_type_mismatch is True


def test_executable_declared_as_pdf_is_a_mismatch(one_attachment: Build) -> None:
    [part] = extract_message(
        one_attachment("Content-Type: application/pdf", PE), Limits()
    ).attachments
    assert part.detected_content_type == "application/vnd.microsoft.portable-executable"
    assert part.content_type_mismatch is True


def test_executable_declared_as_octet_stream_is_not_a_mismatch(one_attachment: Build) -> None:
    raw = one_attachment("Content-Type: application/octet-stream; name=setup.exe", PE)
    [part] = extract_message(raw, Limits()).attachments
    assert part.content_type_mismatch is False


@pytest.mark.parametrize(
    ("declared", "data", "mismatch"),
    [
        ("text/plain", ELF, True),  # an executable behind any other label
        ("image/jpeg", PE, True),
        ("application/x-msdownload", PE, False),
        ("application/zip", PDF, True),
        ("image/png", JPEG, False),  # mislabelled images are common and harmless
        ("application/msword", ZIP, False),  # a .docx sent as application/msword is a zip
        (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            ZIP,
            False,
        ),
        ("application/pdf", b"just text, maybe a broken PDF", False),
        ("text/html", PNG, False),  # text labels promise no specific format
        ("application/octet-stream", PDF, False),
    ],
)
def test_mismatch_is_reported_only_when_it_matters(
    declared: str, data: bytes, mismatch: bool
) -> None:
    assert is_mismatch(declared, detect_content_type(data)) is mismatch
