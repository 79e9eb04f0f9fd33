"""Threads (SPEC §15): the agent's conversations, latest activity first, and one conversation's
messages oldest first, each with its new part (`extracted_text`).

A thread is the messages that share a `thread_id` (References / In-Reply-To / Message-ID, the
subject as a last resort; inbound and outbound alike). The agent sees only the messages of a
thread addressed to (or sent by) it: a thread it has no message in answers 404, exactly as a
missing one, whoever else has mail in it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func
from sqlmodel import col, or_, select

from daemon.api.deps import Caller, cursor_after
from daemon.api.errors import ANY_BODY, authed, not_found
from daemon.api.routes.messages import inline_bodies, summarised
from daemon.api.views import JsonBody, MessageSummary
from daemon.clock import iso
from storage.db import translated_errors
from storage.models import OUTBOUND, Message, Recipient

router = APIRouter(tags=["threads"], responses=ANY_BODY)

ThreadId = Annotated[str, PathParam(min_length=1, max_length=64)]


class ThreadSummary(BaseModel):
    """A conversation as listed: its latest message's subject, time and preview."""

    model_config = ConfigDict(extra="forbid")
    thread_id: str
    subject: str | None
    message_count: int  # the agent's messages in it
    first_message_id: str
    last_message_id: str
    last_message_at: str
    preview: str | None  # the latest message's (SPEC §15)


class ThreadList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threads: list[ThreadSummary]
    next_cursor: str | None
    has_more: bool


class ThreadMessage(MessageSummary):
    extracted_text: str | None  # armored OpenPGP for mail encrypted at rest


class ThreadView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_id: str
    messages: list[ThreadMessage]
    next_cursor: str | None
    has_more: bool


def _visible(agent_id: str, hide: bool) -> Any:
    """The agent's (message seq, thread id) pairs, as a subquery; quarantined mail left out
    when `hide`."""
    query: Any = (select(col(Message.seq).label("seq"), col(Message.thread_id).label("thread_id"))
             .join(Recipient, col(Recipient.message_seq) == col(Message.seq))
             .where(Recipient.agent_id == agent_id, col(Message.thread_id).is_not(None))
             .distinct())
    if hide:
        query = query.where(or_(col(Message.direction) == OUTBOUND, Message.verdict == "pass"))
    return query.subquery()


@router.get("/v1/threads", response_model=ThreadList, responses=authed(400, 422))
async def list_threads(
    caller: Caller,
    after: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """The agent's threads, the one with the latest message first; `next_cursor` pages on to
    older ones (a thread that gets a new message meanwhile moves to the front)."""
    agent_id, ctx = caller.agent_id, caller.ctx
    before = cursor_after(after)
    hide = await ctx.lookups.quarantines(agent_id)
    mine = _visible(agent_id, hide)
    last = func.max(mine.c.seq)
    grouped = (select(mine.c.thread_id, last.label("last_seq"),
                      func.min(mine.c.seq).label("first_seq"), func.count().label("n"))
               .group_by(mine.c.thread_id))
    if before:
        grouped = grouped.having(last < before)
    async with ctx.sessions() as session, translated_errors():
        rows: list[tuple[str, int, int, int]] = [tuple(r) for r in (await session.exec(
            grouped.order_by(last.desc()).limit(limit + 1))).all()]
        has_more = len(rows) > limit
        rows = rows[:limit]
        seqs = [r[1] for r in rows] + [r[2] for r in rows]
        msgs = {m.seq: m for m in (await session.exec(
            select(Message).where(col(Message.seq).in_(seqs)))).all()}
    threads = [{
        "thread_id": thread, "subject": msgs[last_seq].subject, "message_count": count,
        "first_message_id": msgs[first_seq].id, "last_message_id": msgs[last_seq].id,
        "last_message_at": iso(msgs[last_seq].received_at), "preview": msgs[last_seq].preview,
    } for thread, last_seq, first_seq, count in rows]
    return JsonBody({"threads": threads,
                     "next_cursor": str(rows[-1][1]) if rows else after,
                     "has_more": has_more})


@router.get("/v1/threads/{thread_id}", response_model=ThreadView, responses=authed(400, 404, 422))
async def get_thread(
    caller: Caller, thread_id: ThreadId,
    after: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response:
    """The agent's messages of one thread, oldest first, each with `extracted_text` (what it
    says new); `next_cursor` pages on. 404 when the agent has no message in it."""
    agent_id, ctx = caller.agent_id, caller.ctx
    after_seq = cursor_after(after)
    hide = await ctx.lookups.quarantines(agent_id)
    mine = _visible(agent_id, hide)
    async with ctx.sessions() as session, translated_errors():
        seqs = list((await session.exec(
            select(mine.c.seq).where(mine.c.thread_id == thread_id, mine.c.seq > after_seq)
            .order_by(mine.c.seq).limit(limit + 1))).all())
        if not seqs and not after_seq:
            raise not_found("thread")
        has_more = len(seqs) > limit
        seqs = seqs[:limit]
        found = await summarised(session, agent_id, seqs)
    messages = []
    for msg, view in found:  # each with its new part, read from the store
        view["extracted_text"] = (await inline_bodies(ctx, msg, ("extracted",)))["extracted"]
        messages.append(view)
    return JsonBody({"thread_id": thread_id, "messages": messages,
                     "next_cursor": str(seqs[-1]) if seqs else after, "has_more": has_more})
