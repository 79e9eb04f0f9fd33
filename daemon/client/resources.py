"""Seed 001's resource namespaces (SPEC §6, §17): `client.attachments`, `client.messages`,
`client.inboxes`, over the `/api/v1` router, answering small frozen records with attributes.

Each record has the seed's fields as attributes; `record["field"]` and `record.get(...)` also
reach any field the API sent that the record does not name, and `.raw` is the whole answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from daemon.client.api import Api, segment
from daemon.client.errors import PostroomError
from daemon.client.outgoing import Addresses, attachment_ref, mailboxes

R = TypeVar("R", bound="Record")


@dataclass(frozen=True, kw_only=True)
class Record:
    """An API object as attributes; `raw` holds every field the API sent."""

    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # Attributes whose JSON name is a Python keyword: attribute → field.
    _aliases: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_json(cls: type[R], data: Any) -> R:
        if not isinstance(data, Mapping):
            raise PostroomError(0, "invalid_response", f"{cls.__name__}: not a JSON object")
        named = {f.name for f in fields(cls)} - {"raw"}
        return cls(raw=dict(data), **{
            name: data.get(cls._aliases.get(name, name)) for name in named})

    def __getitem__(self, name: str) -> Any:
        return self.raw[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.raw.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


@dataclass(frozen=True, kw_only=True)
class UploadUrl(Record):
    """A presigned PUT: send exactly `size` bytes of the declared type to `upload_url`."""

    upload_url: str
    key: str
    id: str
    expires_at: str | None = None


@dataclass(frozen=True, kw_only=True)
class AttachmentInfo(Record):
    """An inbound attachment or an upload, with a fresh `download_url` when it is ready."""

    id: str
    filename: str | None = None
    mime_type: str | None = None
    size: int | None = None
    message_id: str | None = None
    download_url: str | None = None
    expires_at: str | None = None
    status: str | None = None
    sha256: str | None = None
    created_at: str | None = None


@dataclass(frozen=True, kw_only=True)
class SentMessage(Record):
    """The 202 answer of a send: the message is stored and queued, delivery follows."""

    id: str
    inbox_id: str | None = None
    direction: str | None = None
    status: str | None = None
    thread_id: str | None = None
    recipients: list[Any] | None = None


@dataclass(frozen=True, kw_only=True)
class MessageSummary(Record):
    """A message as an inbox lists it; `has_attachments` says whether to ask for more."""

    _aliases: ClassVar[Mapping[str, str]] = {"from_": "from"}

    id: str
    direction: str | None = None
    status: str | None = None
    from_: str | None = None
    to: str | None = None
    subject: str | None = None
    received_at: str | None = None
    has_attachments: bool | None = None
    attachment_count: int | None = None


@dataclass(frozen=True, kw_only=True)
class MessagePage(Record):
    """One page of an inbox's messages, oldest first; pass `next_cursor` back as `after`."""

    messages: list[MessageSummary]
    next_cursor: str | None = None
    has_more: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Inbox(Record):
    """One of the agent's addresses, as seed 001 calls it (`inb_…`)."""

    id: str
    address: str


class Attachments:
    """`client.attachments`: presigned uploads, attachments by id."""

    def __init__(self, api: Api) -> None:
        self._api = api

    def get_upload_url(self, filename: str, mime_type: str, size: int) -> UploadUrl:
        """A presigned PUT URL for exactly `size` bytes of `mime_type`; send with `.key`."""
        return UploadUrl.from_json(self._api.call("POST", "/api/v1/attachments/upload-url",
                                                  json={"filename": filename,
                                                        "mime_type": mime_type,
                                                        "size": size}))

    def get(self, attachment_id: str) -> AttachmentInfo:
        """An attachment (inbound or uploaded) by id, with a fresh `download_url`."""
        return AttachmentInfo.from_json(
            self._api.call("GET", f"/api/v1/attachments/{segment(attachment_id)}"))


class Messages:
    """`client.messages`: an inbox's messages, and sending from it."""

    def __init__(self, api: Api) -> None:
        self._api = api

    def list(self, inbox_id: str, after: str | None = None, limit: int = 50) -> MessagePage:
        """The inbox's messages (received at its address or sent from it), oldest first."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        page = self._api.object("GET", f"/api/v1/inboxes/{segment(inbox_id)}/messages",
                                params=params)
        items = page.get("messages")
        if not isinstance(items, Sequence):
            raise PostroomError(0, "invalid_response", "an inbox's page without messages")
        return MessagePage.from_json(
            {**page, "messages": [MessageSummary.from_json(m) for m in items]})

    def send(self, inbox_id: str, to: Addresses, subject: str, text_body: str | None = None,
             html_body: str | None = None, cc: Addresses = None, bcc: Addresses = None,
             attachments: Sequence[Mapping[str, Any]] | None = None, *,
             in_reply_to: str | None = None,
             idempotency_key: str | None = None) -> SentMessage:
        """Send from `inbox_id`; `attachments` are refs `{"key" | "id", "filename",
        "mime_type"}` of uploads (or of inbound attachments, to forward them);
        `in_reply_to` a message id the agent may see."""
        body: dict[str, Any] = {"to": mailboxes(to), "subject": subject}
        for name, value in (("cc", cc), ("bcc", bcc)):
            if value is not None:
                body[name] = mailboxes(value, name)
        if text_body is not None:
            body["text_body"] = text_body
        if html_body is not None:
            body["html_body"] = html_body
        if attachments:
            body["attachments"] = [attachment_ref(a) for a in attachments]
        if in_reply_to is not None:
            body["in_reply_to"] = in_reply_to
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return SentMessage.from_json(self._api.call(
            "POST", f"/api/v1/inboxes/{segment(inbox_id)}/messages", json=body,
            headers=headers))


class Inboxes:
    """`client.inboxes`: the agent's addresses."""

    def __init__(self, api: Api) -> None:
        self._api = api

    def list(self) -> list[Inbox]:
        answer = self._api.call("GET", "/api/v1/inboxes")
        items = answer.get("inboxes") if isinstance(answer, Mapping) else answer
        if not isinstance(items, list):
            raise PostroomError(0, "invalid_response", "GET /api/v1/inboxes: no inboxes list")
        return [Inbox.from_json(item) for item in items]
