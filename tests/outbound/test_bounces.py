"""Bounces read from RFC 3464 reports, and VERP addresses made and read back."""

from __future__ import annotations

from daemon.outbound.bounces import recipient_reports
from daemon.outbound.verp import bounced_message_id, envelope_sender

# As Postfix writes one (bounce(8)), trimmed.
POSTFIX_DSN = b"""\
From: MAILER-DAEMON@relay.test (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces+msg_01jd0000000000000000000000@agents.test
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.test
X-Postfix-Queue-ID: 4XYZ
Arrival-Date: Wed,  2 Dec 2026 17:00:00 +0000 (UTC)

Final-Recipient: rfc822; gone@example.test
Original-Recipient: rfc822;gone@example.test
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.test
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.test>: Recipient address
    rejected: User unknown

Final-Recipient: rfc822; slow@example.test
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.example.test: Connection timed out

--B
Content-Type: message/rfc822

From: alice@agents.test
Subject: hello

body
--B--
"""


def test_a_postfix_bounce_names_each_recipient_with_its_status() -> None:
    reports = recipient_reports(POSTFIX_DSN.replace(b"\n", b"\r\n"))
    assert [(r.recipient, r.action, r.status) for r in reports] == [
        ("gone@example.test", "failed", "5.1.1"), ("slow@example.test", "delayed", "4.4.1")]
    assert reports[0].diagnostic == ("smtp; 550 5.1.1 <gone@example.test>: Recipient address "
                                     "rejected: User unknown")


def test_mail_that_is_not_a_report_has_none() -> None:
    assert recipient_reports(b"Subject: hi\r\n\r\nnot a dsn\r\n") == []
    assert recipient_reports(b"Content-Type: multipart/report; boundary=x\r\n\r\n--x--\r\n") == []


def test_verp_addresses_round_trip_and_refuse_other_shapes() -> None:
    mid = "msg_01jd0000000000000000000000"
    sender = envelope_sender(mid, "alice@agents.test", None)
    assert sender == f"bounces+{mid}@agents.test"
    assert bounced_message_id(sender, None) == mid
    assert bounced_message_id(sender.upper(), None) == mid
    custom = envelope_sender(mid, "alice@agents.test", "dsn@bounce.test")
    assert custom == f"dsn+{mid}@bounce.test"
    assert bounced_message_id(custom, "dsn@bounce.test") == mid
    assert bounced_message_id(custom, None) is None
    assert bounced_message_id("bounces+evil@agents.test", None) is None
    assert bounced_message_id("alice+msg_01jd0000000000000000000000@agents.test", None) is None
