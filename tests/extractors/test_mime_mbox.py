"""An mbox "From " separator line among the top headers (behind a trace header added in front
of it) is skipped, not taken for the start of the body."""

from __future__ import annotations

from extractors import Limits, extract_message

MULTIPART = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
             b"Content-Type: application/octet-stream\r\n\r\nabc\r\n--B--\r\n")


def test_a_from_line_behind_our_received_header_is_skipped() -> None:
    raw = (b"Received: from a by b; Sat, 1 Jan 2000 00:00:00 +0000\r\n"
           b"From x@y Sat Jan  1 00:00:00 2000\r\nSubject: hi\r\n" + MULTIPART)
    found = extract_message(raw, Limits())
    assert [p.data for p in found.attachments] == [b"abc"]
    assert found.headers.subject == "hi"
    assert "headers: misplaced mbox From line skipped" in found.defects


def test_at_the_very_start_it_is_skipped_without_a_defect() -> None:
    found = extract_message(b"From x@y Sat Jan  1 00:00:00 2000\r\n" + MULTIPART, Limits())
    assert [p.data for p in found.attachments] == [b"abc"]
    assert "headers: misplaced mbox From line skipped" not in found.defects


def test_a_from_line_that_ends_the_headers_leaves_the_body_after_it() -> None:
    raw = b"Subject: hi\r\nFrom x@y Sat Jan  1 00:00:00 2000\r\nplain body text\r\n"
    found = extract_message(raw, Limits())
    assert found.headers.subject == "hi"
    assert found.text_body is not None and found.text_body.text.startswith("plain body text")


def test_a_body_line_starting_with_from_is_body() -> None:
    raw = b"Subject: hi\r\n\r\nFrom here on, text.\r\n"
    found = extract_message(raw, Limits())
    assert found.text_body is not None and found.text_body.text.startswith("From here on")
    assert not any("mbox" in d for d in found.defects)
