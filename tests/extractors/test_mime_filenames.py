"""Attachment names: decoded as sent (RFC 2231, RFC 2047, raw 8-bit), then made safe."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from extractors import Extraction, Limits, extract_message
from extractors.filenames import safe_file_name

Build = Callable[..., bytes]
Extract = Callable[..., Extraction]


def _names(result: Extraction) -> list[tuple[str, str | None]]:
    return [(p.file_name, p.original_file_name) for p in result.attachments]


def test_rfc2231_continuation_name_is_decoded(extract_fixture: Extract) -> None:
    first = extract_fixture("encoded_names.eml").attachments[0]
    assert first.original_file_name == "€ rates été.pdf"
    assert first.file_name == "€ rates été.pdf"


def test_rfc2231_name_in_its_declared_charset_is_decoded(extract_fixture: Extract) -> None:
    assert _names(extract_fixture("encoded_names.eml"))[1] == ("café.txt", "café.txt")


def test_rfc2047_name_inside_quotes_is_decoded(extract_fixture: Extract) -> None:
    assert _names(extract_fixture("encoded_names.eml"))[2] == ("привет мир.txt", "привет мир.txt")


def test_rfc2047_name_without_quotes_is_decoded(extract_fixture: Extract) -> None:
    assert _names(extract_fixture("encoded_names.eml"))[3] == ("résumé.doc", "résumé.doc")


def test_windows_path_in_quoted_name_keeps_only_the_basename(extract_fixture: Extract) -> None:
    # RFC 822 reads "\T" as "T"; senders mean a path. The stdlib and node's mailparser both
    # answer "C:TEMPscan 01.png"; keeping the backslashes lets the path be cut off instead.
    assert _names(extract_fixture("encoded_names.eml"))[4] == (
        "scan 01.png",
        "C:\\TEMP\\scan 01.png",
    )


def test_raw_utf8_name_is_decoded(one_attachment: Build) -> None:
    raw = one_attachment('Content-Type: application/pdf; name="übersicht.pdf"')
    assert _names(extract_message(raw, Limits())) == [("übersicht.pdf", "übersicht.pdf")]


def test_raw_8bit_name_falls_back_to_the_part_charset(one_attachment: Build) -> None:
    koi8_name = "при.txt".encode("koi8-r").decode("utf-8", "surrogateescape")
    raw = one_attachment(f'Content-Type: text/plain; charset=koi8-r; name="{koi8_name}"')
    assert _names(extract_message(raw, Limits())) == [("при.txt", "при.txt")]


def test_rfc2231_name_wins_over_the_plain_one(one_attachment: Build) -> None:
    raw = one_attachment(
        "Content-Disposition: attachment; filename=plain.txt; filename*=utf-8''better.txt"
    )
    assert _names(extract_message(raw, Limits())) == [("better.txt", "better.txt")]


def test_disposition_filename_wins_over_content_type_name(one_attachment: Build) -> None:
    raw = one_attachment(
        "Content-Type: application/pdf; name=type.pdf\n"
        "Content-Disposition: attachment; filename=disp.pdf"
    )
    assert _names(extract_message(raw, Limits())) == [("disp.pdf", "disp.pdf")]


def test_unquoted_name_with_spaces_keeps_every_word(one_attachment: Build) -> None:
    raw = one_attachment("Content-Disposition: attachment; filename=annual report 2024.pdf")
    assert _names(extract_message(raw, Limits())) == [
        ("annual report 2024.pdf", "annual report 2024.pdf")
    ]


@pytest.mark.parametrize(
    ("sent", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\evil\\a.exe", "a.exe"),
        ("/absolute/path/report.pdf", "report.pdf"),
        ("a\x00b\x01c.txt", "abc.txt"),
        ("tab\tand\nnewline.txt", "tab and newline.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # a bidi override hides the real extension
        ("  ..hidden.txt. . ", "hidden.txt"),
        ("many    spaces.txt", "many spaces.txt"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("Com1.log", "_Com1.log"),
        ("LPT9", "_LPT9"),
        ("console.txt", "console.txt"),
        ('what?<is>this:"|*.txt', "what__is_this____.txt"),
        ("..", "part-7.bin"),
        ("\x00\x01", "part-7.bin"),
        ("../", "part-7.bin"),
    ],
)
def test_unsafe_names_are_made_safe(sent: str, safe: str) -> None:
    assert safe_file_name(sent, 7, "application/octet-stream") == safe


def test_4kb_name_is_cut_to_255_utf8_bytes_keeping_the_extension(one_attachment: Build) -> None:
    long_name = "é" * 2048 + ".pdf"  # 4 kB of UTF-8
    raw = one_attachment(f'Content-Disposition: attachment; filename="{long_name}"')
    [part] = extract_message(raw, Limits()).attachments
    assert part.original_file_name == long_name
    assert part.file_name.endswith("é.pdf")
    assert len(part.file_name.encode("utf-8")) <= 255


def test_name_with_nul_and_control_bytes_in_the_header_is_cleaned(one_attachment: Build) -> None:
    raw = one_attachment('Content-Disposition: attachment; filename="re\x00port\x07.pdf"')
    [part] = extract_message(raw, Limits()).attachments
    # The name as sent, but for the NUL: no text column of PostgreSQL holds one.
    assert part.original_file_name == "re\ufffdport\x07.pdf"
    assert "original file name: NUL replaced" in part.defects
    assert part.file_name == "report.pdf"


@pytest.mark.parametrize(
    ("content_type", "name"),
    [
        ("text/plain", "part-0.txt"),
        ("text/html", "part-0.html"),
        ("image/png", "part-0.png"),
        ("image/jpeg", "part-0.jpg"),
        ("application/pdf", "part-0.pdf"),
        ("text/calendar", "part-0.ics"),
        ("application/octet-stream", "part-0.bin"),
        ("message/delivery-status", "part-0.txt"),
        ("application/x-never-heard-of-it", "part-0.bin"),
        ("application/vnd.api+json", "part-0.json"),
        ("text/x-unknown", "part-0.txt"),
    ],
)
def test_nameless_part_is_named_from_its_index_and_type(
    one_attachment: Build, content_type: str, name: str
) -> None:
    [part] = extract_message(one_attachment(f"Content-Type: {content_type}"), Limits()).attachments
    assert (part.file_name, part.original_file_name) == (name, None)
