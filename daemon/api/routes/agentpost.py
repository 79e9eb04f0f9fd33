"""AgentPost's API as seed 001 shows it (SPEC §17), under `/api/v1`: a thin layer over the same
uploads, attachments, messages and outbox as `/v1`, with AgentPost's names (`filename`,
`mime_type`, `text_body`, `key`, `download_url`) and its inboxes (an agent's addresses, `inb_…`).

Nothing is done here that `/v1` does not do: each route renames fields and calls the core.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor

from daemon.api.deps import Caller
from daemon.api.downloads import ExpiresIn
from daemon.api.errors import ANY_BODY, ApiError, authed
from daemon.api.inboxes import Inbox, agent_inbox, agent_inboxes
from daemon.api.routes.attachments import AttachmentId, attachment_by_id
from daemon.api.routes.messages import (
    Addresses,
    AttachmentRefIn,
    SendResponse,
    attachment_refs,
    mailbox,
    message_page,
    send,
)
from daemon.api.routes.uploads import Bytes, ContentType, FileName, put_upload
from daemon.api.views import JsonBody, MessageList
from daemon.clock import iso
from daemon.outbound import Mailbox, SendRequest

router = APIRouter(tags=["agentpost"], responses=ANY_BODY)


class _AttachmentIdSegment(Convertor[str]):
    """A path segment naming an attachment: any but `upload-url`, so that path is only the
    POST route's (a GET there is 405 with `Allow: POST`, not an attachment lookup)."""

    regex = "(?!upload-url$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("attachment_id", _AttachmentIdSegment())

InboxId = Annotated[str, PathParam(min_length=1, max_length=64)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UploadUrlRequest(_In):
    filename: FileName
    mime_type: ContentType
    size: Bytes
    expires_in: ExpiresIn = None


class UploadUrl(_Out):
    upload_url: str
    key: str
    id: str
    expires_at: str


class AttachmentObject(_Out):
    """An attachment (inbound or an upload) with a presigned `download_url` while `ready`."""

    id: str
    filename: str
    mime_type: str
    size: int | None
    message_id: str | None
    download_url: str | None
    expires_at: str | None  # when download_url stops working
    status: str
    sha256: str | None
    created_at: str


class InboxObject(_Out):
    id: str
    address: str


class InboxList(_Out):
    inboxes: list[InboxObject]


class AgentPostSend(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: Addresses = []
    cc: Addresses = []
    bcc: Addresses = []
    subject: str = ""
    text_body: str | None = None
    html_body: str | None = None
    in_reply_to: str | None = Field(default=None, max_length=64)
    headers: Annotated[dict[str, str], Field(max_length=100)] = {}
    attachments: Annotated[list[AttachmentRefIn], Field(max_length=100)] = []


class AgentPostSent(SendResponse):
    inbox_id: str


@router.post("/api/v1/attachments/upload-url", response_model=UploadUrl,
             responses=authed(400, 413, 422))
async def get_upload_url(caller: Caller, body: UploadUrlRequest) -> Response:
    """A presigned PUT: send exactly `size` bytes (≤ uploads.max_bytes, else 413) with
    `mime_type` as Content-Type to `upload_url`, then attach it by `key`."""
    made = await put_upload(caller.ctx, caller.agent_id, body.filename, body.mime_type,
                            body.size, body.expires_in)
    return JsonBody({"upload_url": made["upload_url"], "key": made["object_key"],
                     "id": made["id"], "expires_at": made["expires_at"]})


@router.get("/api/v1/attachments/{attachment_id:attachment_id}", response_model=AttachmentObject,
            responses=authed(404, 422))
async def get_attachment(caller: Caller, attachment_id: AttachmentId) -> Response:
    """An attachment of a message the agent may see (`att_…`) or one of its uploads
    (`upl_…`), with a fresh `download_url` when it is ready."""
    view, link = await attachment_by_id(caller.ctx, caller.agent_id, attachment_id)
    return JsonBody({
        "id": view["id"], "filename": view["file_name"], "mime_type": view["content_type"],
        "size": view["size"], "message_id": view.get("message_id"),
        "download_url": link.url if link else None,
        "expires_at": iso(link.expires_at) if link else None, "status": view["status"],
        "sha256": view["sha256"], "created_at": view["created_at"]})


@router.get("/api/v1/inboxes", response_model=InboxList, responses=authed())
async def list_inboxes(caller: Caller) -> Response:
    """The agent's inboxes: one per address."""
    inboxes = await agent_inboxes(caller.ctx, caller.agent_id)
    return JsonBody({"inboxes": [i.view() for i in inboxes]})


@router.get("/api/v1/inboxes/{inbox_id}", response_model=InboxObject,
            responses=authed(404, 422))
async def get_inbox(caller: Caller, inbox_id: InboxId) -> Response:
    return JsonBody((await agent_inbox(caller.ctx, caller.agent_id, inbox_id)).view())


@router.get("/api/v1/inboxes/{inbox_id}/messages", response_model=MessageList,
            responses=authed(400, 404, 422))
async def list_inbox_messages(
    caller: Caller, inbox_id: InboxId,
    after: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """The inbox's messages (received at its address, or sent from it), oldest first, each
    with `has_attachments`; the page's `next_cursor` goes back as `after`."""
    inbox = await agent_inbox(caller.ctx, caller.agent_id, inbox_id)
    return JsonBody(await message_page(caller.ctx, caller.agent_id, after, limit,
                                       inbox.recipient_filter()))


@router.post("/api/v1/inboxes/{inbox_id}/messages", status_code=202,
             response_model=AgentPostSent,
             responses=authed(400, 403, 404, 409, 413, 422, 429))
async def send_from_inbox(
    caller: Caller, inbox_id: InboxId, body: AgentPostSend,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Send from the inbox's address: `attachments` are `{key | id, filename, mime_type}` refs
    to the agent's uploads (or inbound attachments it may see). 202 once the message is
    durable, as `POST /v1/messages`."""
    inbox = await agent_inbox(caller.ctx, caller.agent_id, inbox_id)
    answer = await send(caller.ctx, SendRequest(
        agent_id=caller.agent_id, sender=sender_of(inbox),
        to=tuple(map(mailbox, body.to)), cc=tuple(map(mailbox, body.cc)),
        bcc=tuple(map(mailbox, body.bcc)), subject=body.subject, text=body.text_body,
        html=body.html_body, in_reply_to=body.in_reply_to, headers=tuple(body.headers.items()),
        attachments=attachment_refs(body.attachments), idempotency_key=idempotency_key))
    return JsonBody({**answer, "inbox_id": inbox.id}, status_code=202)


def sender_of(inbox: Inbox) -> Mailbox:
    """The address an inbox sends from; a catch-all (`*@domain`) has none (422)."""
    if inbox.catch_all:
        raise ApiError(422, "invalid_request",
                       "a catch-all inbox has no address to send from: send from another")
    return Mailbox(inbox.address)
