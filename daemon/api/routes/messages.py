"""Messages (SPEC §6, §12): the agent's list with a cursor, one message in full, the presigned
URL of its raw bytes, and sending one (`POST /v1/messages`, a thin layer over the outbox).

A message that is not addressed to (or sent by) the agent answers 404, exactly as a missing one
does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import col, or_, select

from daemon.api.deps import AppContext, Caller, MessageId, cursor_after
from daemon.api.downloads import (
    PGP_ENCRYPTED,
    DownloadRequest,
    DownloadResponse,
    lifetime,
    presigned_download,
)
from daemon.api.errors import ANY_BODY, ApiError, authed, not_found
from daemon.api.views import JsonBody, MessageList, MessageView, message_summary, message_view
from daemon.outbound import AttachmentRef, Mailbox, SendRefused, SendRequest
from storage.db import translated_errors
from storage.errors import ObjectNotFound
from storage.models import OUTBOUND, PURGED, Delivery, Message, Recipient
from storage.search import search

router = APIRouter(tags=["messages"], responses=ANY_BODY)

Verdict = Literal["pass", "fail", "none", "temperror"]  # SPEC §13's verdicts
INLINE_BODY_LIMIT = 1 << 20  # bodies above this are not inlined in GET /v1/messages/{id}
MAX_SEARCH_OFFSET = 10_000  # a search pages through its best 10,000 matches


async def load_message(ctx: AppContext, agent_id: str, message_id: str,
                       with_attachments: bool = False) -> tuple[Sequence[Any], Sequence[Any]]:
    """The message once per own recipient row, and its attachments if asked; 404 if the agent
    cannot see it."""
    found = await ctx.lookups.message(agent_id, message_id, with_attachments)
    if found is None:
        raise not_found()
    return found


@router.get("/v1/messages", response_model=MessageList, responses=authed(400, 422))
async def list_messages(
    caller: Caller,
    after: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    verdict: Verdict | None = None,
    include: Literal["quarantined"] | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
) -> Response:
    """The agent's messages, oldest first (newest last), from a cursor; `verdict` keeps those
    whose sender authentication said so (SPEC §13). An agent accepting only authenticated
    mail sees inbound mail whose verdict is not `pass` only with `include=quarantined`.
    `q` searches instead (SPEC §15): subject, addresses, text and attachment text, best match
    first; words must all match, "quoted phrases" match as written, `-word` excludes, `OR`
    offers alternatives; its `next_cursor` pages on through the ranking."""
    quarantined = include == "quarantined"
    if q is not None:
        return JsonBody(await search_page(caller.ctx, caller.agent_id, q, after, limit,
                                          verdict, quarantined))
    return JsonBody(await message_page(caller.ctx, caller.agent_id, after, limit,
                                       verdict=verdict, quarantined=quarantined))


def _search_offset(after: str | None) -> int:
    """The rank a search's `after` names ("r<offset>"); 400 for anything else."""
    if after is None:
        return 0
    digits = after[1:]
    if not (after.startswith("r") and digits.isascii() and digits.isdigit()
            and int(digits) <= MAX_SEARCH_OFFSET):
        raise ApiError(400, "invalid_cursor", "after is not a cursor of this search")
    return int(digits)


async def search_page(ctx: AppContext, agent_id: str, q: str, after: str | None, limit: int,
                      verdict: str | None, quarantined: bool) -> dict[str, Any]:
    """A page of the agent's messages matching `q`, best first."""
    offset = _search_offset(after)
    hide = not quarantined and await ctx.lookups.quarantines(agent_id)
    if ctx.search_caught_up is not None:  # what is ready here is found
        await ctx.search_caught_up()
    async with ctx.sessions() as session, translated_errors():
        seqs = await search(await session.connection(), agent_id, q, limit + 1, offset,
                            verdict=verdict, authenticated_only=hide)
        has_more = len(seqs) > limit
        seqs = seqs[:limit]
        items = await summaries(session, agent_id, seqs)
    return {"messages": items, "next_cursor": f"r{offset + len(seqs)}" if has_more else None,
            "has_more": has_more}


async def message_page(ctx: AppContext, agent_id: str, after: str | None, limit: int,
                       recipients: Any = None, verdict: str | None = None,
                       quarantined: bool = False) -> dict[str, Any]:
    """A page of the agent's messages after the cursor `after`: `{"messages", "next_cursor",
    "has_more"}`; `recipients`, a condition on its recipient rows, narrows it (an inbox), as
    `verdict` does to the messages' verdict. Mail the agent's `accept` quarantines is left
    out unless `quarantined`."""
    after_seq = cursor_after(after)
    hide = not quarantined and await ctx.lookups.quarantines(agent_id)
    async with ctx.sessions() as session, translated_errors():
        page = (select(Recipient.message_seq).distinct()
                .where(Recipient.agent_id == agent_id, col(Recipient.message_seq) > after_seq))
        if recipients is not None:
            page = page.where(recipients)
        if verdict is not None or hide:
            page = page.join(Message, col(Message.seq) == col(Recipient.message_seq))
        if verdict is not None:
            page = page.where(Message.verdict == verdict)
        if hide:
            page = page.where(or_(col(Message.direction) == OUTBOUND, Message.verdict == "pass"))
        seqs = list((await session.exec(
            page.order_by(col(Recipient.message_seq)).limit(limit + 1))).all())
        has_more = len(seqs) > limit
        seqs = seqs[:limit]
        items = await summaries(session, agent_id, seqs)
    return {"messages": items, "next_cursor": str(seqs[-1]) if seqs else after,
            "has_more": has_more}


async def summaries(session: Any, agent_id: str, seqs: Sequence[int]) -> list[dict[str, Any]]:
    """The agent's summaries of the messages `seqs`, in that order."""
    return [summary for _, summary in await summarised(session, agent_id, seqs)]


async def summarised(session: Any, agent_id: str,
                     seqs: Sequence[int]) -> list[tuple[Message, dict[str, Any]]]:
    """Each of the messages `seqs` (in that order) with the agent's summary of it."""
    by_seq: dict[int, list[Recipient]] = {}
    for r in (await session.exec(select(Recipient).where(
            Recipient.agent_id == agent_id, col(Recipient.message_seq).in_(seqs)))).all():
        by_seq.setdefault(r.message_seq, []).append(r)
    msgs = {m.seq: m for m in (await session.exec(
        select(Message).where(col(Message.seq).in_(seqs)))).all()}
    outbound = [m.id for m in msgs.values() if m.direction == OUTBOUND]
    sent: dict[str, list[Delivery]] = {}
    if outbound:  # one more statement, only for a page that holds outbound mail
        for d in (await session.exec(select(Delivery).where(
                col(Delivery.message_id).in_(outbound)).order_by(col(Delivery.id)))).all():
            sent.setdefault(d.message_id, []).append(d)
    return [(msgs[s], message_summary(msgs[s], by_seq.get(s, []), sent.get(msgs[s].id, [])
                                      if msgs[s].direction == OUTBOUND else None))
            for s in seqs if s in msgs]


@router.get("/v1/messages/{message_id}", response_model=MessageView,
            responses=authed(404, 422))
async def get_message(caller: Caller, message_id: MessageId) -> Response:
    """One message: envelope, headers of note, bodies, attachments."""
    agent_id, ctx = caller.agent_id, caller.ctx
    mine, atts = await load_message(ctx, agent_id, message_id, with_attachments=True)
    msg = mine[0]
    bodies = await inline_bodies(ctx, msg)
    deliveries = None
    if msg.direction == OUTBOUND:
        async with ctx.sessions() as session, translated_errors():
            deliveries = list((await session.exec(select(Delivery).where(
                Delivery.message_id == msg.id).order_by(col(Delivery.id)))).all())
    return JsonBody(message_view(msg, mine, atts, bodies["text"], bodies["html"], deliveries,
                                 bodies["extracted"]))


async def inline_bodies(ctx: AppContext, msg: Any,
                        kinds: Sequence[str] = ("text", "html", "extracted")
                        ) -> dict[str, str | None]:
    """A message's bodies as text (None when missing or over INLINE_BODY_LIMIT): "text",
    "html" and "extracted" (the text's new part, the text itself when it is all new)."""
    bodies: dict[str, str | None] = {}
    read: dict[str, str | None] = {}
    for kind in kinds:
        key, size = getattr(msg, f"{kind}_key"), getattr(msg, f"{kind}_size")
        bodies[kind] = None
        if key and (size or 0) <= INLINE_BODY_LIMIT:
            if key not in read:
                try:
                    read[key] = (await ctx.store.get(key)).decode("utf-8", "replace")
                except ObjectNotFound:
                    read[key] = None
            bodies[kind] = read[key]
    found = bodies.get("extracted")
    if found is not None and msg.extracted_key == msg.text_key and not msg.encrypted_to:
        # All of the text is new, so it is stored once: as the new part, it is tidied as
        # a new part that differs from its text is (LF line ends, no outer blank space).
        bodies["extracted"] = found.replace("\r\n", "\n").strip()
    return bodies


@router.post("/v1/messages/{message_id}/raw/download", response_model=DownloadResponse,
             responses=authed(400, 404, 409, 422))
async def download_raw(caller: Caller, message_id: MessageId,
                       body: DownloadRequest | None = None) -> Response:
    """A presigned URL of the raw message as received (with our Received header)."""
    agent_id, ctx = caller.agent_id, caller.ctx
    msg = (await load_message(ctx, agent_id, message_id))[0][0]
    if msg.status == PURGED:
        raise ApiError(409, "purged", "the message is past retention: its bytes are gone")
    expires_in = lifetime(ctx, body.expires_in if body else None)
    if msg.encrypted_to:
        return await presigned_download(ctx, msg.raw_key, expires_in, f"{msg.id}.eml.asc",
                                        PGP_ENCRYPTED, msg.size, msg.raw_sha256, encrypted=True)
    return await presigned_download(ctx, msg.raw_key, expires_in, f"{msg.id}.eml",
                                    "message/rfc822", msg.size, msg.raw_sha256)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MailboxIn(_In):
    email: str = Field(min_length=3, max_length=320)
    name: str | None = Field(default=None, max_length=256)


class AttachmentRefIn(_In):
    """An upload of the agent (`object_key`/`key`, or `id` upl_…) or an inbound attachment it
    may see (`id` att_…), optionally renamed."""

    object_key: str | None = Field(default=None, max_length=1024)
    key: str | None = Field(default=None, max_length=1024)
    id: str | None = Field(default=None, max_length=64)
    filename: str | None = Field(default=None, max_length=255)
    file_name: str | None = Field(default=None, max_length=255)
    mime_type: str | None = Field(default=None, max_length=255)
    content_type: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def _names_one(self) -> AttachmentRefIn:
        if sum(v is not None for v in (self.object_key, self.key, self.id)) != 1:
            raise ValueError("give one of object_key, key or id")
        return self


Addresses = Annotated[list[str | MailboxIn], Field(max_length=10_000)]


class SendBody(_In):
    from_: str | MailboxIn | None = Field(default=None, alias="from")
    to: Addresses = []
    cc: Addresses = []
    bcc: Addresses = []
    subject: str = ""
    text: str | None = None
    html: str | None = None
    in_reply_to: str | None = Field(default=None, max_length=64)
    headers: Annotated[dict[str, str], Field(max_length=100)] = {}
    attachments: Annotated[list[AttachmentRefIn], Field(max_length=100)] = []


class SentRecipient(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str
    kind: str
    status: str
    reason: str | None


class SendResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    direction: str
    status: str
    thread_id: str
    message_id_header: str
    recipients: list[SentRecipient]


def mailbox(value: str | MailboxIn) -> Mailbox:
    return Mailbox(value) if isinstance(value, str) else Mailbox(value.email, value.name)


def attachment_refs(refs: Sequence[AttachmentRefIn]) -> tuple[AttachmentRef, ...]:
    """The outbox's refs, with the seeds' aliases (`key`, `filename`, `mime_type`) resolved."""
    return tuple(AttachmentRef(object_key=a.object_key or a.key, id=a.id,
                               file_name=a.file_name or a.filename,
                               content_type=a.content_type or a.mime_type) for a in refs)


def send_request(agent_id: str, body: SendBody, idempotency_key: str | None) -> SendRequest:
    """The outbox's request from the API's body (SPEC §12's names, and the seeds' aliases)."""
    return SendRequest(
        agent_id=agent_id, sender=None if body.from_ is None else mailbox(body.from_),
        to=tuple(map(mailbox, body.to)), cc=tuple(map(mailbox, body.cc)),
        bcc=tuple(map(mailbox, body.bcc)), subject=body.subject, text=body.text,
        html=body.html, in_reply_to=body.in_reply_to, headers=tuple(body.headers.items()),
        attachments=attachment_refs(body.attachments), idempotency_key=idempotency_key)


async def send(ctx: AppContext, request: SendRequest) -> dict[str, Any]:
    """Queue `request` with the outbox; its refusals as the API's errors."""
    if ctx.outbox is None:
        raise ApiError(503, "unavailable", "sending is not available on this node")
    try:
        return await ctx.outbox.send(request)
    except SendRefused as e:
        headers = None if e.retry_after is None else {"Retry-After": str(e.retry_after)}
        raise ApiError(e.status, e.code, e.message, headers) from None


@router.post("/v1/messages", status_code=202, response_model=SendResponse,
             responses=authed(400, 403, 404, 409, 413, 422, 429))
async def send_message(
    caller: Caller, body: SendBody,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Send mail from one of the agent's addresses (SPEC §12). 202 once the composed message is
    stored and queued; delivery follows (`GET /v1/messages/{id}` shows each recipient, the
    event feed says `message.sent`, `.delivered`, `.deferred`, `.bounced`). Attachments are
    refs to the agent's uploads or to inbound attachments it may see. The same
    `Idempotency-Key` within 24 h answers the first answer and sends once."""
    agent_id, ctx = caller.agent_id, caller.ctx
    answer = await send(ctx, send_request(agent_id, body, idempotency_key))
    return JsonBody(answer, status_code=202)
