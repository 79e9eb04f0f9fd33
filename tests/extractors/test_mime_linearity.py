"""Extraction's cost grows linearly with the input: each pathological shape at ×1 and ×8 its size.

A quadratic step costs 64 times as much at 8 times the input; tests/cost.py counts the calls made
(deterministic) and the CPU time taken (best of three), and either one growing past its bound
fails. Nothing may need recursion either: every ×8 input is also extracted with only a few dozen
frames of stack to spare.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from extractors import Extraction, Limits, extract_message
from tests.cost import assert_linear

STACK_HEADROOM = 60  # frames extraction may use above its caller: far below any nesting tested
PDF = b"%PDF-1.4\r\n%%EOF\r\n"
DEEP = Limits(max_depth=100_000, max_parts=100_000)


def _sibling_parts(count: int) -> bytes:
    part = b"--b\r\nContent-Type: application/octet-stream; name=f.bin\r\n\r\nx\r\n"
    return b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + part * count + b"--b--\r\n"


def _nested_multiparts(depth: int) -> bytes:
    # Boundaries b1, b10, b100 … are prefixes of one another, which a naive scan trips on.
    opening = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (level, level + 1)
        for level in range(depth)
    )
    leaf = b"--b%d\r\nContent-Type: application/pdf; name=deep.pdf\r\n\r\n" % depth + PDF
    closing = b"".join(b"\r\n--b%d--" % level for level in reversed(range(depth + 1)))
    return b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + opening + leaf + closing


def _nested_messages(depth: int) -> bytes:
    message = b"Content-Type: application/pdf; name=deep.pdf\r\n\r\n" + PDF
    for _ in range(depth):
        message = b"Subject: fwd\r\nContent-Type: message/rfc822\r\n\r\n" + message
    return message


def _long_header_line(kilobytes: int) -> bytes:
    return (
        b"Subject: " + b"x" * (kilobytes * 1000) + b"\r\n"
        b"Content-Type: text/plain\r\n\r\nbody\r\n"
    )


def _boundary_like_lines(count: int) -> bytes:
    # Lines that start like the delimiter "--b" but are not one.
    noise = b"--bb\r\n--b x\r\n --b\r\nx--b\r\n--b-\r\n--b---\r\n" * count
    return (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\n" + noise + b"--b--\r\n"
    )


def _noisy_base64(megabytes: int) -> bytes:
    encoded = base64.b64encode(bytes(range(256)) * (megabytes * 4096))
    # Blanks between every quantum, junk bytes, and lines of ragged length.
    noisy = b" \t!".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))
    lines = b"\r\n".join(noisy[i : i + 77] for i in range(0, len(noisy), 77))
    return (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: application/octet-stream; name=a.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + lines + b"\r\n--b--\r\n"
    )


# (builder, size ×1, limits): size ×8 is eight times the first argument.
SHAPES: dict[str, tuple[Callable[[int], bytes], int, Limits]] = {
    "sibling_parts": (_sibling_parts, 2_000, Limits(max_parts=100_000)),
    "sibling_parts_beyond_max_parts": (_sibling_parts, 2_000, Limits()),
    "nested_multiparts_deep": (_nested_multiparts, 500, DEEP),
    "nested_multiparts_default_depth": (_nested_multiparts, 200, Limits()),
    "nested_messages_default_depth": (_nested_messages, 200, Limits()),
    "long_header_line": (_long_header_line, 100, Limits()),
    "boundary_like_lines": (_boundary_like_lines, 2_000, Limits()),
    "noisy_base64": (_noisy_base64, 1, Limits()),
}


@contextmanager
def _shallow_stack() -> Iterator[None]:
    """Allow only STACK_HEADROOM frames above the caller, so any recursion per level fails."""
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + STACK_HEADROOM)
    try:
        yield
    finally:
        sys.setrecursionlimit(saved)


def _internal_errors(result: Extraction) -> list[str]:
    return [defect for defect in result.defects if defect.startswith("internal")]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_extraction_cost_grows_linearly_with_the_input(shape: str) -> None:
    build, size, limits = SHAPES[shape]
    small, large = build(size), build(size * 8)
    assert len(large) > 7 * len(small)
    assert_linear(lambda raw: extract_message(raw, limits), small, large)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_pathological_input_needs_no_recursion(shape: str) -> None:
    build, size, limits = SHAPES[shape]
    raw = build(size * 8)
    with _shallow_stack():
        result = extract_message(raw, limits)  # a RecursionError would become a defect …
    assert _internal_errors(result) == []  # … which this finds


def test_1600_deep_multipart_reaches_the_innermost_part_with_the_depth_limit_raised() -> None:
    with _shallow_stack():
        result = extract_message(_nested_multiparts(1600), DEEP)
    [part] = result.attachments
    assert (part.file_name, part.data, part.defects) == ("deep.pdf", PDF, ())
    assert part.path == ".".join(["1"] * 1601)


def test_1600_deep_multipart_stops_at_the_default_depth_as_one_opaque_part() -> None:
    with _shallow_stack():
        result = extract_message(_nested_multiparts(1600), Limits())
    [part] = result.attachments
    assert part.defects == ("depth_limit",)
    assert part.content_type == "multipart/mixed"
    assert part.path == ".".join(["1"] * 32)  # the multipart at depth 32, headers and all
    assert part.data.startswith(b"Content-Type: multipart/mixed; boundary=b32\r\n")
    assert part.data.endswith(PDF + b"".join(b"\r\n--b%d--" % n for n in range(1600, 31, -1)))


def test_1600_deep_forwarded_messages_are_all_listed_without_recursion() -> None:
    # Not timed: each .eml is listed with its own bytes, so the output itself grows as depth².
    with _shallow_stack():
        result = extract_message(_nested_messages(1600), DEEP)
    assert _internal_errors(result) == []
    assert len(result.attachments) == 1601
    assert result.attachments[-1].data == PDF
    assert result.attachments[-1].parent == 1599


def test_noisy_base64_decodes_to_the_exact_bytes() -> None:
    [part] = extract_message(_noisy_base64(1), Limits()).attachments
    assert part.data == bytes(range(256)) * 4096
    assert part.defects == ("base64: invalid characters ignored",)


def test_boundary_like_lines_stay_inside_the_one_text_part() -> None:
    result = extract_message(_boundary_like_lines(3), Limits())
    assert result.attachments == ()
    assert result.text_body is not None
    assert result.text_body.text.count("--bb") == 3
    assert result.defects == ()
