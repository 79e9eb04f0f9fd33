"""Limits and hostile input: every bound is crossed once, and nothing makes extraction raise."""

from __future__ import annotations

import base64
import binascii
import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from extractors import Limits, extract_message
from tests.cost import assert_linear

Build = Callable[..., bytes]

FIXTURES = Path(__file__).parent / "fixtures"
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def _nested_multiparts(depth: int) -> bytes:
    opening = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (level, level + 1)
        for level in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--" % level for level in reversed(range(depth + 1)))
    leaf = b"--b%d\r\nContent-Type: application/pdf\r\n\r\n" % depth + PDF
    return b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + opening + leaf + closing


def _nested_messages(depth: int) -> bytes:
    message = b"Content-Type: application/pdf\r\n\r\n" + PDF
    for level in range(depth):
        message = b"Subject: level %d\r\nContent-Type: message/rfc822\r\n\r\n" % level + message
    return message


def test_part_over_the_size_limit_is_rejected_as_too_large(one_attachment: Build) -> None:
    raw = one_attachment("Content-Type: application/pdf; name=big.pdf", PDF)
    [part] = extract_message(raw, Limits(max_attachment_size=len(PDF) - 1)).attachments
    assert (part.outcome, part.reason, part.data) == ("rejected", "too_large", b"")
    assert part.size == len(PDF)
    assert part.sha256 == hashlib.sha256(PDF).hexdigest()


def test_part_at_the_size_limit_is_kept(one_attachment: Build) -> None:
    raw = one_attachment("Content-Type: application/pdf; name=big.pdf", PDF)
    [part] = extract_message(raw, Limits(max_attachment_size=len(PDF))).attachments
    assert (part.outcome, part.data) == ("ok", PDF)


def test_parts_beyond_the_part_limit_are_summed_up_in_one_rejected_part(
    multipart: Build, part: Build
) -> None:
    files = [part(f"Content-Type: application/pdf; name={n}.pdf", PDF) for n in range(5)]
    result = extract_message(
        multipart(part("Content-Type: text/plain", b"body"), *files), Limits(max_parts=2)
    )
    assert [(p.index, p.file_name, p.outcome) for p in result.attachments] == [
        (0, "0.pdf", "ok"),
        (1, "1.pdf", "ok"),
        (2, "part-2.bin", "rejected"),
    ]
    summary = result.attachments[2]
    assert (summary.reason, summary.path, summary.data) == ("part_limit", "4", b"")
    assert summary.defects == ("part_limit: 3 parts not listed",)
    assert "part_limit: 3 parts beyond 2 not listed" in result.defects


def test_multipart_nested_beyond_the_depth_limit_is_kept_whole() -> None:
    result = extract_message(_nested_multiparts(4), Limits(max_depth=2))
    [opaque] = result.attachments
    assert (opaque.outcome, opaque.path, opaque.content_type) == ("ok", "1.1", "multipart/mixed")
    assert "depth_limit" in opaque.defects
    assert opaque.data.startswith(b"Content-Type: multipart/mixed; boundary=b2")
    assert PDF in opaque.data
    assert opaque.file_name == "part-0.eml"


def test_message_nested_beyond_the_depth_limit_is_not_opened() -> None:
    result = extract_message(_nested_messages(3), Limits(max_depth=1))
    assert [(p.path, p.content_type, p.parent) for p in result.attachments] == [
        ("1", "message/rfc822", None),
        ("1.1", "message/rfc822", 0),
    ]
    assert "depth_limit" in result.attachments[1].defects


def test_a_5000_part_message_is_listed_at_a_linear_cost(multipart: Build, part: Build) -> None:
    def parts(count: int) -> bytes:
        return multipart(*[part(f"Content-Type: text/plain; name=f{n}.txt", b"x")
                           for n in range(count)])

    result = extract_message(parts(5000), Limits(max_parts=10_000))
    assert len(result.attachments) == 5000
    assert result.attachments[-1].file_name == "f4999.txt"
    assert_linear(lambda raw: extract_message(raw, Limits(max_parts=10_000)), parts(625),
                  parts(5000))


def test_20000_part_message_lists_only_up_to_the_limit(multipart: Build, part: Build) -> None:
    def parts(count: int) -> bytes:
        return multipart(*[part("Content-Type: application/octet-stream", b"x")] * count)

    result = extract_message(parts(20_000), Limits(max_parts=1000))
    assert len(result.attachments) == 1001
    assert result.attachments[-1].defects == ("part_limit: 19000 parts not listed",)
    assert_linear(lambda raw: extract_message(raw, Limits(max_parts=1000)), parts(2500),
                  parts(20_000))


@pytest.mark.parametrize("max_depth", [32, 5000])
def test_1000_deep_multipart_nesting_completes_without_recursion(max_depth: int) -> None:
    result = extract_message(_nested_multiparts(1000), Limits(max_depth=max_depth))
    [part] = result.attachments
    assert part.defects == (("depth_limit",) if max_depth == 32 else ())
    assert_linear(lambda raw: extract_message(raw, Limits(max_depth=max_depth)),
                  _nested_multiparts(125), _nested_multiparts(1000))


@pytest.mark.parametrize("max_depth", [32, 5000])
def test_1000_deep_message_nesting_completes_without_recursion(max_depth: int) -> None:
    limits = Limits(max_depth=max_depth, max_parts=5000)
    result = extract_message(_nested_messages(1000), limits)
    # Messages at depth 0..max_depth are listed; without a limit, the innermost PDF too.
    assert len(result.attachments) == (33 if max_depth == 32 else 1001)
    assert result.attachments[-1].parent == len(result.attachments) - 2
    # Each .eml listed holds the ones inside it, so the bytes listed grow as depth²; copying
    # them is cheap next to parsing at this depth (about 12× at ×8 here, the bound is 20×).
    assert_linear(lambda raw: extract_message(raw, limits), _nested_messages(125),
                  _nested_messages(1000))


# Headers of about `n` bytes (1 MB in the tests, an eighth of it to compare with).
LONG_HEADERS: dict[str, Callable[[int], bytes]] = {
    "subject": lambda n: b"Subject: " + b"x" * n,
    "encoded_words": lambda n: b"Subject: " + b"=?utf-8?q?a?= " * (n // 14),
    "encoded_word_openings": lambda n: b"Subject: " + b"=?" * (n // 2),
    "unknown_field": lambda n: b"X-Long: " + b"y" * n,
    "parameters": lambda n: b"Content-Type: text/plain; " + b"a;" * (n // 2),
    "quoted_pairs": lambda n: b'Content-Type: text/plain; name="' + b'\\"' * (n // 2),
    "file_name": lambda n: b"Content-Disposition: attachment; filename=" + b"n" * n,
    "folded_lines": lambda n: b"Subject: a\r\n" + b" folded\r\n" * (n // 10),
    "no_colon": lambda n: b"z" * n,
}


@pytest.mark.parametrize("header", list(LONG_HEADERS))
def test_1mb_header_is_read_at_a_linear_cost(header: str) -> None:
    def message(size: int) -> bytes:
        return LONG_HEADERS[header](size) + b"\r\n\r\nbody\r\n"

    result = extract_message(message(1_000_000), Limits())
    assert not [d for d in result.defects if d.startswith("internal")]
    assert_linear(lambda raw: extract_message(raw, Limits()), message(125_000),
                  message(1_000_000))


def test_rfc2231_name_in_10000_sections_is_read_at_a_linear_cost(one_attachment: Build) -> None:
    def sections(count: int) -> bytes:
        return one_attachment("Content-Disposition: attachment; " +
                              "".join(f"filename*{n}*=%41;" for n in range(count)))

    [part] = extract_message(sections(10_000), Limits()).attachments
    assert part.original_file_name == "A" * 10_000
    assert len(part.file_name) == 255
    assert_linear(lambda raw: extract_message(raw, Limits()), sections(1250), sections(10_000))


def test_mutated_messages_never_raise_and_never_hit_an_internal_error() -> None:
    rng = random.Random(20250106)
    originals = [path.read_bytes() for path in sorted(FIXTURES.glob("*.eml"))]
    for _ in range(1500):
        raw = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 8)):
            if not raw:
                break
            where = rng.randrange(len(raw))
            action = rng.randrange(4)
            if action == 0:
                raw[where] = rng.randrange(256)
            elif action == 1:
                del raw[where : where + rng.randint(1, 40)]
            elif action == 2:
                raw[where:where] = rng.choice(
                    [b"\r\n", b"--", b"=?", b";", b'"', b"\x00", b"\n--b\n"]
                )
            else:
                raw = raw[:where]
        result = extract_message(bytes(raw), Limits(max_parts=5, max_depth=3))
        assert not [d for d in result.defects if d.startswith("internal")], bytes(raw)


def test_too_large_part_is_rejected_and_the_rest_of_the_message_is_kept(
    multipart: Build, part: Build
) -> None:
    big = bytes(range(256)) * 8  # 2 kB decoded, about 2.8 kB as base64
    raw = multipart(
        part("Content-Type: text/plain", b"the body"),
        part("Content-Type: application/pdf; name=small.pdf", PDF),
        part(
            "Content-Type: application/octet-stream; name=big.bin\n"
            "Content-Transfer-Encoding: base64",
            base64.encodebytes(big),
        ),
        part("Content-Type: application/pdf; name=after.pdf", PDF),
    )
    result = extract_message(raw, Limits(max_attachment_size=len(big) - 1))
    assert result.text_body is not None and result.text_body.text == "the body"
    assert [(p.file_name, p.outcome, p.reason) for p in result.attachments] == [
        ("small.pdf", "ok", None),
        ("big.bin", "rejected", "too_large"),
        ("after.pdf", "ok", None),
    ]
    rejected = result.attachments[1]
    # The decoded size and digest are recorded, not the transfer-encoded ones.
    assert (rejected.size, rejected.sha256, rejected.data) == (
        len(big), hashlib.sha256(big).hexdigest(), b""
    )
    assert result.attachments[2].data == PDF


def test_size_limit_applies_to_decoded_bytes_not_to_base64(one_attachment: Build) -> None:
    data = b"\x00" * 300  # 400 bytes as base64
    raw = one_attachment(
        "Content-Type: application/octet-stream; name=z.bin\nContent-Transfer-Encoding: base64",
        base64.b64encode(data),
    )
    [part] = extract_message(raw, Limits(max_attachment_size=300)).attachments
    assert (part.outcome, part.data) == ("ok", data)


def test_too_large_uuencoded_file_is_rejected_with_its_size_and_digest() -> None:
    data = bytes(range(200))
    encoded = b"".join(binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45))
    raw = (
        b"Content-Type: text/plain\r\n\r\nsee below\r\nbegin 644 blob.bin\r\n"
        + encoded.replace(b"\n", b"\r\n") + b"`\r\nend\r\n"
    )
    [part] = extract_message(raw, Limits(max_attachment_size=199)).attachments
    assert (part.source, part.file_name, part.outcome, part.reason) == (
        "uuencode", "blob.bin", "rejected", "too_large"
    )
    assert (part.size, part.sha256, part.data) == (200, hashlib.sha256(data).hexdigest(), b"")


def test_too_large_forwarded_message_is_rejected_and_its_small_files_still_listed(
    multipart: Build, part: Build
) -> None:
    inner = b"Subject: inner\r\nContent-Type: application/pdf; name=in.pdf\r\n\r\n" + PDF
    raw = multipart(
        part("Content-Type: text/plain", b"body"), part("Content-Type: message/rfc822", inner)
    )
    result = extract_message(raw, Limits(max_attachment_size=len(PDF)))
    assert [(p.file_name, p.outcome, p.reason, p.parent) for p in result.attachments] == [
        ("inner.eml", "rejected", "too_large", None),
        ("in.pdf", "ok", None, 0),
    ]


def test_part_limit_counts_files_found_inside_parts_too(multipart: Build, part: Build) -> None:
    block = b"begin 644 f%d.bin\r\n" + binascii.b2a_uu(b"abc").replace(b"\n", b"\r\n") + b"end\r\n"
    text = b"".join(block % n for n in range(4))
    raw = multipart(part("Content-Type: text/plain", text),
                    part("Content-Type: application/pdf; name=a.pdf", PDF))
    result = extract_message(raw, Limits(max_parts=3))
    assert [(p.file_name, p.outcome, p.reason) for p in result.attachments] == [
        ("f0.bin", "ok", None),
        ("f1.bin", "ok", None),
        ("f2.bin", "ok", None),
        ("part-3.bin", "rejected", "part_limit"),
    ]
    assert result.attachments[3].defects == ("part_limit: 2 parts not listed",)
