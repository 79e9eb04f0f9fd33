"""AgentSend's API as seed 002 shows it (SPEC §17), at the root: attachments uploaded through the
daemon (`POST /attachments`, multipart `file`), read back with a fresh presigned `url`, and sent
from an inbox (`POST /inboxes/{inboxId}/messages` with `bodyText`, `bodyHtml`, `threadId`,
`attachmentIds`). Fields are camelCase; the key comes as `x-api-key` (or Bearer).

A thin layer over the same uploads, attachments, messages and outbox as `/v1`, with the inboxes
of `/api/v1` (the same `inb_…` ids).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from daemon.api.deps import AppContext, Caller
from daemon.api.errors import ANY_BODY, authed, not_found
from daemon.api.inboxes import agent_inbox, agent_inboxes
from daemon.api.routes.agentpost import InboxId, InboxList, sender_of
from daemon.api.routes.attachments import AttachmentId, attachment_by_id
from daemon.api.routes.messages import Addresses, mailbox, message_page, send
from daemon.api.routes.uploads import MULTIPART_BODY, direct_upload
from daemon.api.views import JsonBody, upload_view
from daemon.clock import iso
from daemon.outbound import AttachmentRef, SendRequest
from storage.db import translated_errors
from storage.models import Message, Recipient

router = APIRouter(tags=["agentsend"], responses=ANY_BODY)

_MESSAGES: Any = Message.__table__  # type: ignore[attr-defined]
_RECIPIENTS: Any = Recipient.__table__  # type: ignore[attr-defined]
_SNAKE = re.compile(r"_([a-z0-9])")


def camel(value: Any) -> Any:
    """`value` with every key of its dicts in camelCase (`thread_id` → `threadId`)."""
    if isinstance(value, dict):
        return {_SNAKE.sub(lambda m: m.group(1).upper(), k): camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttachmentObject(_Out):
    """Seed 002's attachment object, with what postroom knows of it besides."""

    id: str
    filename: str
    contentType: str  # the seed's field names
    size: int | None
    url: str | None  # presigned, time-limited; null until the bytes are stored
    createdAt: str
    expiresAt: str | None  # when url stops working
    messageId: str | None  # an inbound attachment's message
    status: str
    sha256: str | None


class SendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: Addresses = []
    cc: Addresses = []
    bcc: Addresses = []
    subject: str = ""
    bodyText: str | None = None
    bodyHtml: str | None = None
    threadId: str | None = Field(default=None, max_length=40)  # answer its newest
    inReplyTo: str | None = Field(default=None, max_length=64)  # a msg_… id
    headers: Annotated[dict[str, str], Field(max_length=100)] = {}
    attachmentIds: Annotated[list[Annotated[str, Field(max_length=64)]],
                             Field(max_length=100)] = []


class SentRecipient(_Out):
    address: str
    kind: str
    status: str
    reason: str | None


class Sent(_Out):
    id: str
    inboxId: str
    threadId: str
    status: str
    direction: str
    messageIdHeader: str
    recipients: list[SentRecipient]


class MessagePage(_Out):
    messages: list[dict[str, Any]]  # GET /v1/messages' summaries, camelCase
    nextCursor: str | None
    hasMore: bool


def _attachment(view: dict[str, Any], expires_at: float | None) -> dict[str, Any]:
    return {"id": view["id"], "filename": view["file_name"],
            "contentType": view["content_type"], "size": view["size"], "url": view["url"],
            "createdAt": view["created_at"], "expiresAt": iso(expires_at),
            "messageId": view.get("message_id"), "status": view["status"],
            "sha256": view["sha256"]}


@router.post("/attachments", status_code=201, response_model=AttachmentObject,
             responses=authed(400, 413), openapi_extra=MULTIPART_BODY)
async def upload_attachment(caller: Caller, request: Request) -> Response:
    """Upload a file (multipart field `file`, ≤ uploads.max_bytes, else 413); its name and type
    come from the part. Send it by its `id` in `attachmentIds`."""
    row, link = await direct_upload(caller.ctx, caller.agent_id, request)
    return JsonBody(_attachment(upload_view(row, link.url if link else None),
                                link.expires_at if link else None), status_code=201)


@router.get("/attachments/{attachment_id}", response_model=AttachmentObject,
            responses=authed(404, 422))
async def get_attachment(caller: Caller, attachment_id: AttachmentId) -> Response:
    """An upload of the agent or an attachment of a message it may see, with a fresh `url`."""
    view, link = await attachment_by_id(caller.ctx, caller.agent_id, attachment_id)
    return JsonBody(_attachment(view, link.expires_at if link else None))


@router.get("/inboxes", response_model=InboxList, responses=authed())
async def list_inboxes(caller: Caller) -> Response:
    """The agent's inboxes, one per address, with the ids of `/api/v1/inboxes`."""
    inboxes = await agent_inboxes(caller.ctx, caller.agent_id)
    return JsonBody({"inboxes": [i.view() for i in inboxes]})


@router.get("/inboxes/{inbox_id}/messages", response_model=MessagePage,
            responses=authed(400, 404, 422))
async def list_inbox_messages(
    caller: Caller, inbox_id: InboxId,
    after: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """The inbox's messages, oldest first, camelCase; `nextCursor` goes back as `after`."""
    inbox = await agent_inbox(caller.ctx, caller.agent_id, inbox_id)
    return JsonBody(camel(await message_page(caller.ctx, caller.agent_id, after, limit,
                                             inbox.recipient_filter())))


@router.post("/inboxes/{inbox_id}/messages", status_code=202, response_model=Sent,
             responses=authed(400, 403, 404, 409, 413, 422, 429))
async def send_from_inbox(
    caller: Caller, inbox_id: InboxId, body: SendBody,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Send from the inbox's address; `threadId` answers the thread's newest message the agent
    may see (404 if none), `inReplyTo` a message by id. 202 once the message is durable."""
    ctx, agent_id = caller.ctx, caller.agent_id
    inbox = await agent_inbox(ctx, agent_id, inbox_id)
    in_reply_to = body.inReplyTo
    if in_reply_to is None and body.threadId is not None:
        in_reply_to = await newest_in_thread(ctx, agent_id, body.threadId)
    answer = await send(ctx, SendRequest(
        agent_id=agent_id, sender=sender_of(inbox), to=tuple(map(mailbox, body.to)),
        cc=tuple(map(mailbox, body.cc)), bcc=tuple(map(mailbox, body.bcc)),
        subject=body.subject, text=body.bodyText, html=body.bodyHtml, in_reply_to=in_reply_to,
        headers=tuple(body.headers.items()),
        attachments=tuple(AttachmentRef(id=i) for i in body.attachmentIds),
        idempotency_key=idempotency_key))
    return JsonBody(camel({**answer, "inbox_id": inbox.id}), status_code=202)


async def newest_in_thread(ctx: AppContext, agent_id: str, thread_id: str) -> str:
    """The id of the newest message of the thread the agent may see; 404 if it sees none."""
    async with ctx.sessions() as session, translated_errors():
        found = (await session.execute(
            select(_MESSAGES.c.id)
            .join(_RECIPIENTS, _RECIPIENTS.c.message_id == _MESSAGES.c.id)
            .where(_MESSAGES.c.thread_id == thread_id, _RECIPIENTS.c.agent_id == agent_id)
            .order_by(_MESSAGES.c.seq.desc()).limit(1))).scalar()
    if found is None:
        raise not_found("thread")
    return str(found)
