"""How the walker splits messages into bodies and attachments, and how it numbers them."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from extractors import Extraction, Limits, extract_message

Build = Callable[..., bytes]
Extract = Callable[..., Extraction]

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def test_mixed_with_alternative_gives_both_bodies_and_every_file(extract_fixture: Extract) -> None:
    result = extract_fixture("mixed_alternative.eml")
    assert result.text_body is not None and result.html_body is not None
    assert result.text_body.path == "1.1"
    assert (
        result.text_body.text == "Hello, here is the report – see attached. Soft line break joined."
    )
    assert result.html_body.path == "1.2"
    assert result.html_body.text == "<p>Hello, here is the report – see attached.</p>"
    assert [(p.index, p.path, p.file_name) for p in result.attachments] == [
        (0, "2", "report.pdf"),
        (1, "3", "numbers.csv"),
        (2, "4", "notes.txt"),
    ]
    assert result.defects == ()


def test_top_headers_are_decoded_to_text(extract_fixture: Extract) -> None:
    headers = extract_fixture("mixed_alternative.eml").headers
    assert headers.from_ == "Alice Example <alice@example.com>"
    assert headers.cc == "Björn <bjorn@example.com>"
    assert headers.subject == "Quarterly report ✓"
    assert headers.message_id == "<mixed-1@example.com>"
    assert headers.in_reply_to == "<earlier@example.com>"
    assert headers.references == "<first@example.com> <earlier@example.com>"


def test_attachment_records_carry_decoded_bytes_and_their_digest(extract_fixture: Extract) -> None:
    pdf = extract_fixture("mixed_alternative.eml").attachments[0]
    assert pdf.data == PDF
    assert pdf.size == len(PDF)
    assert pdf.sha256 == hashlib.sha256(PDF).hexdigest()
    assert (pdf.content_type, pdf.detected_content_type) == ("application/pdf", "application/pdf")
    assert pdf.disposition == "attachment"
    assert pdf.outcome == "ok" and pdf.reason is None and pdf.parent is None


def test_related_inline_image_is_an_attachment_with_its_content_id(
    extract_fixture: Extract,
) -> None:
    result = extract_fixture("related_inline_image.eml")
    assert result.text_body is not None and result.text_body.path == "1"
    assert result.html_body is not None and result.html_body.path == "2.1"
    [image] = result.attachments
    assert (image.path, image.content_type, image.disposition) == ("2.2", "image/png", "inline")
    assert image.content_id == "logo@example.com"
    assert image.file_name == "part-0.png" and image.original_file_name is None


def test_related_root_follows_the_start_parameter(extract_fixture: Extract) -> None:
    result = extract_fixture("related_start_param.eml")
    assert result.html_body is not None
    assert (result.html_body.path, result.html_body.text) == ("2", "<p>the root</p>")
    assert [p.content_id for p in result.attachments] == ["decoy@example.com"]


def test_forwarded_message_is_an_eml_whose_files_follow_with_parent_and_path(
    extract_fixture: Extract,
) -> None:
    result = extract_fixture("forwarded_rfc822.eml")
    eml, inner_pdf, chart = result.attachments
    assert (eml.index, eml.path, eml.content_type) == (0, "2", "message/rfc822")
    assert eml.file_name == "Forecast _ Q3.eml"  # from the embedded Subject, slash defused
    assert eml.original_file_name is None
    assert eml.data.startswith(b"From: Carol")
    assert (inner_pdf.path, inner_pdf.parent, inner_pdf.file_name) == ("2.2", 0, "forecast.pdf")
    assert inner_pdf.data == PDF
    assert (chart.index, chart.path, chart.parent) == (2, "3", None)
    # The embedded message's own body stays inside the .eml.
    assert result.text_body is not None and result.text_body.text == "See the forwarded message."


def test_nested_message_without_subject_is_named_by_index(multipart: Build, part: Build) -> None:
    inner = b"From: x@example.com\r\n\r\nno subject here\r\n"
    raw = multipart(
        part("Content-Type: text/plain", b"body"), part("Content-Type: message/rfc822", inner)
    )
    [eml] = extract_message(raw, Limits()).attachments
    assert eml.file_name == "part-0.eml"


def test_base64_encoded_message_rfc822_is_decoded_before_it_is_walked(
    multipart: Build, part: Build
) -> None:
    inner = b"Subject: inner\r\nContent-Type: application/pdf\r\n\r\n" + PDF
    raw = multipart(
        part(
            "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64",
            base64.encodebytes(inner),
        )
    )
    eml, pdf = extract_message(raw, Limits()).attachments
    assert eml.data == inner and eml.file_name == "inner.eml"
    assert (pdf.path, pdf.parent, pdf.data) == ("1.1", 0, PDF)


def test_missing_final_boundary_keeps_the_last_part_with_a_defect(extract_fixture: Extract) -> None:
    result = extract_fixture("missing_final_boundary.eml")
    assert "multipart: missing final boundary" in result.defects
    [pdf] = result.attachments
    assert pdf.data == PDF and pdf.outcome == "ok"


def test_lf_only_message_is_split_like_a_crlf_one(extract_fixture: Extract) -> None:
    result = extract_fixture("lf_only.eml")
    assert result.text_body is not None and result.text_body.text == "Line one\nLine two"
    [image] = result.attachments
    assert image.file_name == "dot.png" and image.detected_content_type == "image/png"


def test_single_part_message_is_its_own_body_at_path_1(extract_fixture: Extract) -> None:
    result = extract_fixture("single_part_latin1.eml")
    assert result.text_body is not None
    assert (result.text_body.path, result.text_body.charset) == ("1", "iso-8859-1")
    assert result.text_body.text == "Réunion au café à 10h.\r\n"
    assert result.headers.subject == "Réunion café"  # raw 8-bit UTF-8 header
    assert result.headers.from_ == "René <rene@example.com>"
    assert result.attachments == ()


def test_single_part_attachment_message_is_one_part_at_path_1() -> None:
    raw = (
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n"
        + PDF
    )
    result = extract_message(raw, Limits())
    assert result.text_body is None
    [pdf] = result.attachments
    assert (pdf.path, pdf.file_name, pdf.data) == ("1", "a.pdf", PDF)


def test_only_the_first_part_of_mixed_can_be_a_body(multipart: Build, part: Build) -> None:
    raw = multipart(
        part("Content-Type: text/plain", b"first"),
        part("Content-Type: text/html", b"<p>second</p>"),
        part("Content-Type: text/plain", b"footer"),
    )
    result = extract_message(raw, Limits())
    assert result.text_body is not None and result.text_body.text == "first"
    assert result.html_body is None
    assert [(p.path, p.file_name) for p in result.attachments] == [
        ("2", "part-0.html"),
        ("3", "part-1.txt"),
    ]


def test_text_part_with_a_file_name_is_an_attachment_not_a_body(
    multipart: Build, part: Build
) -> None:
    raw = multipart(part('Content-Type: text/plain; name="readme.txt"', b"read me"))
    result = extract_message(raw, Limits())
    assert result.text_body is None
    assert [p.file_name for p in result.attachments] == ["readme.txt"]


def test_calendar_and_delivery_status_parts_are_attachments(multipart: Build, part: Build) -> None:
    raw = multipart(
        part("Content-Type: text/plain", b"Delivery failed."),
        part("Content-Type: message/delivery-status", b"Reporting-MTA: dns; mx.example.com\r\n"),
        part("Content-Type: text/calendar; method=REQUEST", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR"),
        subtype="report",
    )
    result = extract_message(raw, Limits())
    assert [(p.content_type, p.file_name) for p in result.attachments] == [
        ("message/delivery-status", "part-0.txt"),
        ("text/calendar", "part-1.ics"),
    ]


def test_part_without_headers_is_plain_text(multipart: Build) -> None:
    raw = multipart(b"\r\njust text", b"also text without a blank line")
    result = extract_message(raw, Limits())
    assert result.text_body is not None and result.text_body.text == "just text"
    [other] = result.attachments
    assert other.content_type == "text/plain" and other.data == b"also text without a blank line"
    assert "headers: none" in other.defects


def test_multipart_without_its_boundary_is_kept_as_text_with_a_defect() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=nowhere\r\n\r\nno delimiter lines at all\r\n"
    result = extract_message(raw, Limits())
    assert result.text_body is not None and result.text_body.text == "no delimiter lines at all\r\n"
    assert any("boundary not found" in defect for defect in result.defects)


def test_digest_parts_default_to_message_rfc822(multipart: Build) -> None:
    raw = multipart(
        b"\r\nSubject: one\r\n\r\nfirst", b"\r\nSubject: two\r\n\r\nsecond", subtype="digest"
    )
    result = extract_message(raw, Limits())
    assert [(p.content_type, p.file_name) for p in result.attachments] == [
        ("message/rfc822", "one.eml"),
        ("message/rfc822", "two.eml"),
    ]


def test_message_without_structure_still_yields_a_body_and_a_defect() -> None:
    result = extract_message(b"\x00\xff garbage without headers", Limits())
    assert result.text_body is not None
    assert "headers: none" in result.defects


def test_empty_message_yields_an_empty_extraction_with_a_defect() -> None:
    result = extract_message(b"", Limits())
    assert result.attachments == ()
    assert "message: empty" in result.defects


def test_mbox_from_line_is_not_read_as_a_header() -> None:
    raw = b"From someone@example.com Mon Jan  6 10:00:00 2025\r\nSubject: hi\r\n\r\nbody"
    result = extract_message(raw, Limits())
    assert result.headers.subject == "hi" and result.defects == ()


def test_parameter_without_semicolon_is_still_read(one_attachment: Build) -> None:
    raw = one_attachment('Content-Type: application/pdf name="late.pdf"', PDF)
    [pdf] = extract_message(raw, Limits()).attachments
    assert (pdf.content_type, pdf.file_name) == ("application/pdf", "late.pdf")
    assert "content-type: parameters: missing ';' after the main value" in pdf.defects


def test_unparseable_content_type_becomes_octet_stream_with_a_defect(one_attachment: Build) -> None:
    [part] = extract_message(one_attachment("Content-Type: <html>"), Limits()).attachments
    assert part.content_type == "application/octet-stream"
    assert part.defects == ("content-type: unparseable '<html>'",)


def test_partial_and_external_body_are_kept_as_sent_with_a_defect(
    multipart: Build, part: Build
) -> None:
    fragment = b"Message-ID: <frag@x>\r\n\r\nfirst half"
    reference = b"Content-Type: application/pdf\r\n\r\n"
    raw = multipart(
        part('Content-Type: message/partial; id="abc"; number=1; total=2', fragment),
        part('Content-Type: message/external-body; access-type=URL; URL="http://x/a.pdf"',
             reference),
    )
    partial, external = extract_message(raw, Limits()).attachments
    assert partial.data == fragment and partial.parent is None
    assert "message/partial: one fragment, kept as sent, not reassembled" in partial.defects
    assert external.data == reference
    assert "message/external-body: a reference, recorded and not fetched" in external.defects
