"""Messages (SPEC §6): the agent's list with a cursor, one message in full, and the presigned
URL of its raw bytes.

A message that is not addressed to the agent answers 404, exactly as a missing one does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlmodel import col, select

from daemon.api.deps import AgentId, AppContext, Ctx, MessageId, cursor_after
from daemon.api.downloads import (
    PGP_ENCRYPTED,
    DownloadRequest,
    DownloadResponse,
    lifetime,
    presigned_download,
)
from daemon.api.errors import ApiError, authed, not_found
from daemon.api.views import JsonBody, MessageList, MessageView, message_summary, message_view
from storage.db import translated_errors
from storage.errors import ObjectNotFound
from storage.models import PURGED, Message, Recipient

router = APIRouter(tags=["messages"])

INLINE_BODY_LIMIT = 1 << 20  # bodies above this are not inlined in GET /v1/messages/{id}


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
    agent_id: AgentId, ctx: Ctx,
    after: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """The agent's messages, oldest first (newest last), from a cursor."""
    after_seq = cursor_after(after)
    async with ctx.sessions() as session, translated_errors():
        seqs = list((await session.exec(
            select(Recipient.message_seq).distinct()
            .where(Recipient.agent_id == agent_id, col(Recipient.message_seq) > after_seq)
            .order_by(col(Recipient.message_seq)).limit(limit + 1))).all())
        has_more = len(seqs) > limit
        seqs = seqs[:limit]
        by_seq: dict[int, list[Recipient]] = {}
        for r in (await session.exec(select(Recipient).where(
                Recipient.agent_id == agent_id, col(Recipient.message_seq).in_(seqs)))).all():
            by_seq.setdefault(r.message_seq, []).append(r)
        msgs = {m.seq: m for m in (await session.exec(
            select(Message).where(col(Message.seq).in_(seqs)))).all()}
    items = [message_summary(msgs[s], by_seq[s]) for s in seqs if s in msgs]
    return JsonBody({"messages": items, "next_cursor": str(seqs[-1]) if seqs else after,
                     "has_more": has_more})


@router.get("/v1/messages/{message_id}", response_model=MessageView,
            responses=authed(404, 422))
async def get_message(agent_id: AgentId, ctx: Ctx, message_id: MessageId) -> Response:
    """One message: envelope, headers of note, bodies, attachments."""
    mine, atts = await load_message(ctx, agent_id, message_id, with_attachments=True)
    msg = mine[0]
    bodies: dict[str, str | None] = {"text": None, "html": None}
    for kind, key, size in (("text", msg.text_key, msg.text_size),
                            ("html", msg.html_key, msg.html_size)):
        if key and (size or 0) <= INLINE_BODY_LIMIT:
            try:
                bodies[kind] = (await ctx.store.get(key)).decode("utf-8", "replace")
            except ObjectNotFound:
                bodies[kind] = None
    return JsonBody(message_view(msg, mine, atts, bodies["text"], bodies["html"]))


@router.post("/v1/messages/{message_id}/raw/download", response_model=DownloadResponse,
             responses=authed(400, 404, 409, 422))
async def download_raw(agent_id: AgentId, ctx: Ctx, message_id: MessageId,
                       body: DownloadRequest | None = None) -> Response:
    """A presigned URL of the raw message as received (with our Received header)."""
    msg = (await load_message(ctx, agent_id, message_id))[0][0]
    if msg.status == PURGED:
        raise ApiError(409, "purged", "the message is past retention: its bytes are gone")
    expires_in = lifetime(ctx, body.expires_in if body else None)
    if msg.encrypted_to:
        return await presigned_download(ctx, msg.raw_key, expires_in, f"{msg.id}.eml.asc",
                                        PGP_ENCRYPTED, msg.size, msg.raw_sha256, encrypted=True)
    return await presigned_download(ctx, msg.raw_key, expires_in, f"{msg.id}.eml",
                                    "message/rfc822", msg.size, msg.raw_sha256)
