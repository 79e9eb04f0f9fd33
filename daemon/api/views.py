"""Rows → the JSON objects the API returns, with the SPEC's field names (SPEC §6).

A row is an ORM object or a row of `lookups.py`, whose columns carry the same names.
The models below are those objects' schemas in the OpenAPI document; the routes send the dicts
built here without a validation pass (`JsonBody`), so a model and its view change together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json
from starlette.responses import Response

from daemon.clock import iso
from storage.models import Attachment, Message, Recipient, Upload

# A lookups row is a named tuple made at run time, so it cannot be named more precisely here.
AttachmentRow: TypeAlias = Attachment | Any
MessageRow: TypeAlias = Message | Any
RecipientRow: TypeAlias = Recipient | Any


def _json_list(text: str | None) -> list[Any]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def attachment_view(a: AttachmentRow) -> dict[str, Any]:
    """The attachment status object."""
    return {
        "id": a.id, "message_id": a.message_id, "index": a.index, "status": a.status,
        "file_name": a.file_name, "original_file_name": a.original_file_name,
        "content_type": a.content_type, "detected_content_type": a.detected_content_type,
        "content_type_mismatch": a.content_type_mismatch, "disposition": a.disposition,
        "content_id": a.content_id, "size": a.size, "sha256": a.sha256, "parent": a.parent,
        "path": a.path, "source": a.source, "encrypted": a.encrypted,
        "encryption": json.loads(a.encryption) if a.encryption else None,
        "stored_sha256": a.stored_sha256, "stored_size": a.stored_size,
        "error": a.error, "defects": _json_list(a.defects),
        "created_at": iso(a.created_at), "ready_at": iso(a.ready_at),
        "text_status": a.text_status, "text_size": a.text_size,
        "text_truncated": bool(a.text_truncated), "text_error": a.text_error,
    }


def upload_view(u: Upload, url: str | None) -> dict[str, Any]:
    """An upload as an attachment object: what SPEC §6 names, then what postroom knows of it
    (`size` and `sha256` stay null until the bytes are seen; a presigned upload's never are
    hashed, since they never pass through postroom)."""
    return {
        "id": u.id, "file_name": u.file_name, "content_type": u.content_type, "size": u.size,
        "url": url, "created_at": iso(u.created_at), "object_key": u.object_key,
        "status": u.status, "sha256": u.sha256, "ready_at": iso(u.ready_at),
        "source": "upload",
    }


def message_summary(m: MessageRow, mine: Sequence[RecipientRow],
                    deliveries: Sequence[Any] | None = None) -> dict[str, Any]:
    """A message as listed: envelope, headers of note, status; no bodies. An outbound one also
    has `deliveries`, its recipients' statuses (None for inbound mail)."""
    return {
        "id": m.id, "direction": m.direction, "status": m.status,
        "received_at": iso(m.received_at),
        "processed_at": iso(m.processed_at), "mail_from": m.mail_from,
        "recipients": [r.address for r in mine],
        "tag": next((r.tag for r in mine if r.tag), None),
        "from": m.from_, "to": m.to, "cc": m.cc, "subject": m.subject, "date": m.date,
        "message_id": m.message_id_header, "in_reply_to": m.in_reply_to,
        "references": m.references, "thread_id": m.thread_id, "verdict": m.verdict,
        "preview": m.preview, "size": m.size,
        "has_attachments": m.attachment_count > 0, "attachment_count": m.attachment_count,
        "error": m.error,
        "deliveries": None if deliveries is None else [delivery_view(d) for d in deliveries],
    }


def delivery_view(d: Any) -> dict[str, Any]:
    """One recipient of an outbound message and where its delivery stands (SPEC §12)."""
    return {"address": d.address, "kind": d.kind, "local": d.local, "status": d.status,
            "attempts": d.attempts, "next_attempt_at": iso(d.next_attempt_at),
            "reply": d.reply, "reason": d.reason,
            "delivered_message_id": d.delivered_message_id, "updated_at": iso(d.updated_at)}


def message_view(m: MessageRow, mine: Sequence[RecipientRow],
                 attachments: Sequence[AttachmentRow],
                 text: str | None, html: str | None,
                 deliveries: Sequence[Any] | None = None,
                 extracted: str | None = None) -> dict[str, Any]:
    """A message in full: the summary plus bodies (and `extracted`, the text's new part),
    attachments and defects; for an outbound one, `deliveries`, its recipients' statuses."""
    out = message_summary(m, mine, deliveries)
    recipients = _json_list(m.encrypted_to) if m.encrypted_to else None
    sealed = recipients is not None
    out.update({
        # Encrypted at rest: `text`, `html` and `extracted_text` are the armored OpenPGP
        # messages as stored.
        "text": text, "html": html, "extracted_text": extracted,
        "body": {
            "text": None if m.text_key is None else {"size": m.text_size, "encrypted": sealed},
            "html": None if m.html_key is None else {"size": m.html_size, "encrypted": sealed},
        },
        "attachments": [attachment_view(a) for a in attachments],
        "defects": _json_list(m.defects),
        "pgp": m.pgp, "smime": m.smime,
        "encryption": None if recipients is None else {
            "algorithm": "openpgp", "format": "armored", "recipients": recipients},
        "signature": _json_object(m.signature),
        "manifest": _json_list(m.manifest) if m.manifest else None,
        "authentication": _json_object(m.authentication),
    })
    return out


def _json_object(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class JsonBody(Response):
    """A JSON response serialized as FastAPI's own fast path does (pydantic-core), for routes
    that build a plain dict of the documented shape: the same bytes without a validation pass."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return to_json(content)


# The schemas of the views above. `extra="forbid"`: the document lists every field we send.

class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Inbound: extraction's statuses (SPEC §5). Outbound: queued until every recipient is done, then
# sent, bounced (every recipient) or partial (some bounced).
MessageStatus = Literal["received", "processing", "ready", "partial", "failed", "purged",
                        "queued", "sent", "bounced"]
DeliveryStatus = Literal["queued", "sending", "sent", "delivered", "deferred", "bounced"]
AttachmentStatusName = Literal["pending", "ready", "rejected", "failed", "purged"]


class AttachmentStatus(_View):
    """The attachment status object (SPEC §6)."""

    id: str
    message_id: str
    index: int
    status: AttachmentStatusName
    file_name: str
    original_file_name: str | None
    content_type: str
    detected_content_type: str | None
    content_type_mismatch: bool
    disposition: str | None
    content_id: str | None
    size: int
    sha256: str
    parent: int | None
    path: str
    source: str
    encrypted: bool
    encryption: dict[str, Any] | None
    stored_sha256: str | None
    stored_size: int | None
    error: str | None
    defects: list[str]
    created_at: str
    ready_at: str | None
    # SPEC §15: null while pending, or for an attachment never stored (rejected, failed).
    text_status: Literal["ready", "unsupported", "too_large", "failed", "encrypted"] | None
    text_size: int | None  # characters, when ready
    text_truncated: bool  # cut at content.max_text_chars or content.max_pages
    text_error: str | None


class InboundAttachment(AttachmentStatus):
    """An inbound attachment by id, with a fresh download `url` when it is ready."""

    url: str | None


class UploadObject(_View):
    """An upload as an attachment object (`upload_view`)."""

    id: str
    file_name: str
    content_type: str
    size: int | None
    url: str | None
    created_at: str
    object_key: str
    status: Literal["pending", "ready"]
    sha256: str | None
    ready_at: str | None
    source: Literal["upload"]


class DeliveryView(_View):
    """One recipient of an outbound message (`delivery_view`)."""

    address: str
    kind: Literal["to", "cc", "bcc"]
    local: bool
    status: DeliveryStatus
    attempts: int
    next_attempt_at: str | None
    reply: str | None
    reason: str | None
    delivered_message_id: str | None
    updated_at: str


class MessageSummary(_View):
    """A message as listed (`message_summary`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    id: str
    direction: Literal["inbound", "outbound"]
    status: MessageStatus
    received_at: str
    processed_at: str | None
    mail_from: str
    recipients: list[str]
    tag: str | None
    from_: str | None = Field(alias="from")
    to: str | None
    cc: str | None
    subject: str | None
    date: str | None
    message_id: str | None
    in_reply_to: str | None
    references: str | None
    thread_id: str | None  # null until extraction has read the headers
    preview: str | None  # SPEC §15; null until extracted, and for mail encrypted at rest
    verdict: Literal["pass", "fail", "none", "temperror"] | None  # SPEC §13; null: unverified
    size: int
    has_attachments: bool
    attachment_count: int
    error: str | None
    deliveries: list[DeliveryView] | None


class MessageList(_View):
    messages: list[MessageSummary]
    next_cursor: str | None
    has_more: bool


class BodyPart(_View):
    size: int | None
    encrypted: bool


class Bodies(_View):
    text: BodyPart | None
    html: BodyPart | None


class MessageEncryption(_View):
    algorithm: Literal["openpgp"]
    format: Literal["armored"]
    recipients: list[Any]


class MessageView(MessageSummary):
    """A message in full (`message_view`)."""

    text: str | None
    html: str | None
    extracted_text: str | None  # SPEC §15: the new part of `text`
    body: Bodies
    attachments: list[AttachmentStatus]
    defects: list[str]
    pgp: str | None
    smime: str | None
    encryption: MessageEncryption | None
    signature: dict[str, Any] | None
    manifest: list[Any] | None
    # SPEC §13: {"spf", "dkim", "dmarc", "arc", "verdict", "header"}; null until verified
    authentication: dict[str, Any] | None
