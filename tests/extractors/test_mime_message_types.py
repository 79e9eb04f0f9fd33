"""multipart/digest (children default to message/rfc822) and delivery reports
(multipart/report with message/delivery-status), as RFC 2046 §5.1.5 and RFC 3464 say."""

from __future__ import annotations

from extractors import Limits, extract_message

DIGEST = (
    b"Subject: digest\r\nMIME-Version: 1.0\r\nContent-Type: multipart/digest; boundary=D\r\n\r\n"
    b"--D\r\n\r\nSubject: first\r\nContent-Type: multipart/mixed; boundary=I\r\n\r\n"
    b"--I\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--I\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\nJVBERi0xLjQ=\r\n--I--\r\n"
    b"--D\r\n\r\nSubject: second\r\n\r\nplain\r\n--D--\r\n")

REPORT = (
    b"Subject: Undelivered\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; "
    b"report-type=delivery-status; boundary=R\r\n\r\n"
    b"--R\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
    b"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
    b"Final-Recipient: rfc822; x@y\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    b"--R\r\nContent-Type: message/rfc822\r\n\r\nSubject: original\r\nFrom: a@b\r\n\r\nbody\r\n"
    b"--R--\r\n")


def test_digest_parts_without_a_type_are_messages_with_their_attachments_after_them() -> None:
    found = extract_message(DIGEST, Limits())
    listed = [(p.index, p.path, p.content_type, p.file_name, p.parent)
              for p in found.attachments]
    assert listed == [
        (0, "1", "message/rfc822", "first.eml", None),
        (1, "1.2", "application/pdf", "a.pdf", 0),
        (2, "2", "message/rfc822", "second.eml", None),
    ]
    assert found.attachments[1].data == b"%PDF-1.4"
    assert found.attachments[2].data.startswith(b"Subject: second\r\n")


def test_a_delivery_report_lists_its_status_and_the_returned_message() -> None:
    found = extract_message(REPORT, Limits())
    assert found.text_body is not None
    assert found.text_body.text.startswith("Your message could not be delivered.")
    status, original = found.attachments
    assert (status.content_type, status.path, status.outcome) == \
        ("message/delivery-status", "2", "ok")
    assert b"Status: 5.1.1" in status.data
    assert (original.content_type, original.file_name, original.path) == \
        ("message/rfc822", "original.eml", "3")
    assert original.data.startswith(b"Subject: original\r\n")
