"""Composing an agent's outbound message once (SPEC §12): RFC 5322 + MIME bytes, ready to sign.

Pure: a `Draft` and the attachments' bytes in, the message's bytes out, through the standard
library's `email` package (RFC 2047 for non-ASCII headers, RFC 2231 for file names, base64 for
attachments so their bytes arrive exactly). It refuses, with `CompositionError`, anything that
would let a caller write a header of its own choosing: CR, LF or NUL in any value, envelope,
trace and structural header names in `headers`. It never opens a file or a socket.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address as EmailAddress
from email.message import EmailMessage
from email.utils import format_datetime

# CRLF line ends, lines folded at 78, and refusal of a value that would start a new header.
_POLICY = policy.SMTP.clone(max_line_length=78, raise_on_defect=True)

# Set by postroom itself (structure, identity, threading) or by the systems mail passes through
# (trace, authentication): an agent's `headers` may name none of them.
RESERVED_HEADERS = frozenset(h.lower() for h in (
    "From", "Sender", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID",
    "In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
    "Content-Disposition", "Content-ID", "Content-Description", "Received", "Return-Path",
    "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-From", "X-Envelope-To",
    "DKIM-Signature", "Domainkey-Signature", "ARC-Seal", "ARC-Message-Signature",
    "ARC-Authentication-Results", "Authentication-Results", "Received-SPF", "Resent-Date",
    "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Bcc", "Resent-Message-ID",
    "X-Postroom-Message-Id"))
# RFC 5322 §3.6.8: printable ASCII except the colon, at most 76 so the line stays foldable.
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")
_LOCAL_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
MAX_HEADER_VALUE = 998 * 8  # a folded value, any longer is refused (a 1 MB subject)
# The X-AgentMail-Attachments manifest names every attachment (up to 100 a message): it may be
# as long as the reader takes (extractors/pgp.py MAX_MANIFEST_BYTES, 64 KiB), folded.
MAX_MANIFEST_VALUE = 60 * 1024
_LONGER_HEADERS = {"x-agentmail-attachments": MAX_MANIFEST_VALUE}


class CompositionError(ValueError):
    """The draft cannot become a message as asked (the API answers 422 with its text)."""


@dataclass(frozen=True)
class Mailbox:
    email: str
    name: str | None = None


@dataclass(frozen=True)
class FilePart:
    """An attachment: its exact bytes and what to call it."""

    file_name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Draft:
    sender: Mailbox
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    in_reply_to: str | None = None  # the Message-ID (with <>) of the message answered
    references: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[FilePart, ...] = field(default_factory=tuple)


def _clean(value: str, what: str, limit: int = MAX_HEADER_VALUE) -> str:
    if any(c in value for c in "\r\n\0"):
        raise CompositionError(f"{what} must not contain CR, LF or NUL")
    if len(value) > limit:
        raise CompositionError(f"{what} is longer than {limit} characters")
    return value


def check_address(address: str, what: str = "address") -> tuple[str, str]:
    """(local part, domain) of a plain `local@domain` address; `CompositionError` otherwise."""
    _clean(address, what, 320)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(local) > 64 or len(domain) > 255 \
            or not _LOCAL_ATOM.fullmatch(local) or local.startswith(".") \
            or local.endswith(".") or ".." in local or any(c in domain for c in " <>()[],;:\\\""):
        raise CompositionError(f"{what} {address!r} is not a valid email address")
    return local, domain


def _mailbox(box: Mailbox, what: str) -> EmailAddress:
    local, domain = check_address(box.email, what)
    name = _clean(box.name or "", f"{what} name", 256)
    try:
        return EmailAddress(display_name=name, username=local, domain=domain)
    except (ValueError, IndexError) as e:
        raise CompositionError(f"{what} {box.email!r} is not a valid email address") from e


def _content_type(value: str) -> tuple[str, str]:
    main, slash, sub = _clean(value, "content type", 255).partition(";")[0].strip().partition("/")
    if not slash or not main or not sub:
        return "application", "octet-stream"
    return main.lower(), sub.lower()


def compose(draft: Draft, *, message_id: str, date: datetime) -> bytes:
    """The message's bytes (CRLF); `message_id` is the Message-ID header's value with `<>`."""
    msg = EmailMessage(policy=_POLICY)
    try:
        msg["From"] = _mailbox(draft.sender, "from")
        if draft.to:
            msg["To"] = [_mailbox(b, "to") for b in draft.to]
        if draft.cc:
            msg["Cc"] = [_mailbox(b, "cc") for b in draft.cc]
        msg["Subject"] = _clean(draft.subject, "subject")
        msg["Date"] = format_datetime(date)
        msg["Message-ID"] = _clean(message_id, "message id", 250)
        if draft.in_reply_to:
            msg["In-Reply-To"] = _clean(draft.in_reply_to, "in_reply_to", 998)
            refs = [_clean(r, "references", 998) for r in (*draft.references, draft.in_reply_to)]
            msg["References"] = " ".join(dict.fromkeys(refs))
        for name, value in draft.headers:
            if not _FIELD_NAME.fullmatch(name):
                raise CompositionError(f"header name {name!r} is not a valid field name")
            if name.lower() in RESERVED_HEADERS:
                raise CompositionError(f"header {name} is set by postroom, not by the sender")
            msg[name] = _clean(value, f"header {name}",
                               _LONGER_HEADERS.get(name.lower(), MAX_HEADER_VALUE))
        _set_bodies(msg, draft)
        for part in draft.attachments:
            main, sub = _content_type(part.content_type)
            name = _clean(part.file_name, "attachment file name", 255)
            msg.add_attachment(part.data, maintype=main, subtype=sub, filename=name)
        return msg.as_bytes(policy=_POLICY)
    except CompositionError:
        raise
    except (ValueError, TypeError, IndexError) as e:  # the email package's own refusals
        raise CompositionError(f"the message cannot be composed: {e}") from e


def _set_bodies(msg: EmailMessage, draft: Draft) -> None:
    text, html = draft.text, draft.html
    if text is None and html is None:
        text = ""
    if text is not None:
        msg.set_content(_no_nul(text, "text"), subtype="plain", cte=_cte(text))
        if html is not None:
            msg.add_alternative(_no_nul(html, "html"), subtype="html", cte=_cte(html))
    elif html is not None:
        msg.set_content(_no_nul(html, "html"), subtype="html", cte=_cte(html))


def _no_nul(body: str, what: str) -> str:
    if "\0" in body:
        raise CompositionError(f"{what} must not contain NUL")
    return body


def _cte(body: str) -> str:
    """7bit/quoted-printable for ASCII text, base64 otherwise: every relay passes either."""
    return "quoted-printable" if body.isascii() else "base64"


def header_addresses(boxes: Sequence[Mailbox]) -> list[str]:
    """The bare addresses of `boxes`, in order, once each (the envelope's recipients)."""
    return list(dict.fromkeys(b.email for b in boxes))
