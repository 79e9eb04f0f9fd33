"""Builders of test messages (distinct bytes each time unless asked otherwise)."""

from __future__ import annotations

import os
from email.message import EmailMessage
from email.utils import make_msgid


def with_attachment(to: str, payload: bytes, file_name: str = "report.pdf",
                    content_type: str = "application/pdf", subject: str = "Quarterly report",
                    text: str = "Please see the attached report.") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg.set_content(text)
    maintype, subtype = content_type.split("/")
    msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=file_name)
    return msg


def plain(to: str, text: str = "hello", subject: str = "hi") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg.set_content(text + "\n" + os.urandom(8).hex())
    return msg
