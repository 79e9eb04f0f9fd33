"""uuencoded files in text bodies and x-uuencode parts become attachments; BinHex is kept."""

from __future__ import annotations

import binascii
from collections.abc import Callable

from extractors import Limits, extract_message
from tests.cost import assert_linear

Build = Callable[..., bytes]
PAYLOAD = bytes(range(256)) * 3


def _uuencode(data: bytes, name: str = "photo.bin") -> bytes:
    lines = [binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45)]
    return f"begin 644 {name}\n".encode() + b"".join(lines) + b"`\nend\n"


def test_uuencoded_block_in_the_text_body_is_an_attachment(multipart: Build, part: Build) -> None:
    text = b"Here it is:\r\n\r\n" + _uuencode(PAYLOAD).replace(b"\n", b"\r\n") + b"\r\nbye\r\n"
    result = extract_message(
        b"Subject: old school\r\nContent-Type: text/plain\r\n\r\n" + text, Limits())
    assert result.text_body is not None and "Here it is" in result.text_body.text
    [found] = result.attachments
    assert (found.file_name, found.source, found.parent, found.path) == (
        "photo.bin", "uuencode", None, "1")
    assert found.data == PAYLOAD and found.outcome == "ok"


def test_several_blocks_and_prose_that_only_looks_like_one(multipart: Build, part: Build) -> None:
    text = (b"begin 644 is how it starts, in prose\n" + _uuencode(b"first", "a.txt")
            + b"between\n" + _uuencode(b"second", "b.txt"))
    result = extract_message(b"Content-Type: text/plain\r\n\r\n" + text, Limits())
    assert [(p.file_name, p.data) for p in result.attachments] == [
        ("a.txt", b"first"), ("b.txt", b"second")]


def test_x_uuencode_transfer_encoding_is_decoded_with_source_uuencode(
    one_attachment: Build,
) -> None:
    raw = one_attachment(
        "Content-Type: application/octet-stream; name=data.bin\r\n"
        "Content-Transfer-Encoding: x-uuencode", _uuencode(PAYLOAD, "data.bin"))
    [found] = extract_message(raw, Limits()).attachments
    assert (found.data, found.source, found.file_name) == (PAYLOAD, "uuencode", "data.bin")


def test_an_x_uuencode_typed_part_lists_the_file_inside_it(one_attachment: Build) -> None:
    raw = one_attachment("Content-Type: application/x-uuencode; name=archive.uu",
                         _uuencode(PAYLOAD, "archive.tar"))
    holder, inner = extract_message(raw, Limits()).attachments
    assert (holder.file_name, holder.source) == ("archive.uu", "mime")
    assert (inner.file_name, inner.source, inner.parent, inner.data) == (
        "archive.tar", "uuencode", holder.index, PAYLOAD)


def test_a_hostile_uuencoded_name_is_made_safe(one_attachment: Build) -> None:
    raw = b"Content-Type: text/plain\r\n\r\n" + _uuencode(b"x", "../../etc/passwd")
    [found] = extract_message(raw, Limits()).attachments
    assert found.file_name == "passwd" and found.original_file_name == "../../etc/passwd"


def test_binhex_is_kept_as_one_part_with_a_defect(one_attachment: Build) -> None:
    body = b"(This file must be converted with BinHex 4.0)\r\n:!!!!!!!:\r\n"
    raw = one_attachment("Content-Type: application/mac-binhex40; name=doc.hqx", body)
    [found] = extract_message(raw, Limits()).attachments
    assert found.file_name == "doc.hqx" and found.data.startswith(b"(This file")
    assert "binhex: kept as sent, not decoded" in found.defects


def test_a_text_of_nothing_but_begin_lines_is_scanned_in_linear_time() -> None:
    def begin_lines(count: int) -> bytes:
        return b"Content-Type: text/plain\r\n\r\n" + b"begin 644 x\r\nM\r\n" * count

    assert_linear(lambda raw: extract_message(raw, Limits()), begin_lines(2_000),
                  begin_lines(16_000))
