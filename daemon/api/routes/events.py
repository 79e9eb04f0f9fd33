"""`GET /v1/events` (SPEC §6): the agent's event feed, from a cursor, with a long poll.

The rows are written by the changes they report (`daemon.events`); this router only reads them.
A long poll is woken by writes on this node and re-reads at least every second for writes of
other nodes.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, or_, select

from daemon.api.deps import AppContext, Caller, cursor_after
from daemon.api.errors import ANY_BODY, authed
from daemon.api.views import JsonBody
from daemon.events import EVENTS, event_view
from storage.db import translated_errors
from storage.models import OUTBOUND, Message

router = APIRouter(tags=["events"], responses=ANY_BODY)

MESSAGES: Any = Message.__table__  # type: ignore[attr-defined]


class EventView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str  # evt_…: stable, the webhook-id of its deliveries (SPEC §14)
    cursor: str
    type: str
    message_id: str | None
    attachment_id: str | None
    index: int | None
    status: str | None
    verdict: str | None  # message.received: the sender authentication's verdict (SPEC §13)
    webhook_id: str | None  # webhook.disabled: the endpoint (SPEC §14)
    thread_id: str | None  # the message's (SPEC §15); null until extracted
    preview: str | None  # the message's; null until extracted and when encrypted at rest
    created_at: str


class EventList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventView]
    next_cursor: str
    has_more: bool


async def _read(ctx: AppContext, agent_id: str, after: int, limit: int,
                hide_quarantined: bool = False) -> list[Any]:
    c, m = EVENTS.c, MESSAGES.c
    stmt = (select(EVENTS, m.thread_id.label("message_thread_id"),
                   m.preview.label("message_preview"))
            .outerjoin(MESSAGES, m.id == c.message_id)
            .where(c.agent_id == agent_id, c.seq > after))
    if hide_quarantined:  # events of no message (uploads), of sent mail, or of passing mail
        stmt = stmt.where(or_(c.message_id.is_(None), m.direction == OUTBOUND,
                              m.verdict == "pass"))
    async with ctx.sessions() as session, translated_errors():
        result = await session.execute(stmt.order_by(c.seq).limit(limit + 1))
        return list(result.all())


async def _latest(ctx: AppContext, agent_id: str) -> int:
    c = EVENTS.c
    async with ctx.sessions() as session, translated_errors():
        found = (await session.execute(select(func.max(c.seq)).where(
            c.agent_id == agent_id))).scalar()
    return int(found or 0)


@router.get("/v1/events", response_model=EventList, responses=authed(400, 422))
async def list_events(
    caller: Caller,
    after: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    wait: Annotated[float, Query(ge=0, le=30)] = 0,
    include: Literal["quarantined"] | None = None,
) -> Response:
    """The agent's events after `after`, oldest first; `?wait=` (≤ 30 s) holds the request
    until there is at least one. `next_cursor` resumes exactly where this answer ended;
    `after=latest` answers none, with the cursor of the feed's end (to follow only what
    happens from now on). An
    agent accepting only authenticated mail gets the events of quarantined mail only with
    `include=quarantined` (SPEC §13)."""
    agent_id, ctx = caller.agent_id, caller.ctx
    if after == "latest":  # the end of the feed: only what happens from now on
        return JsonBody({"events": [], "next_cursor": str(await _latest(ctx, agent_id)),
                         "has_more": False})
    after_seq = cursor_after(after)
    hide = include is None and await ctx.lookups.quarantines(agent_id)
    deadline = time.monotonic() + min(wait, ctx.max_wait)
    while True:
        rows = await _read(ctx, agent_id, after_seq, limit, hide)
        remaining = deadline - time.monotonic()
        if rows or remaining <= 0:
            break
        await ctx.events.wait(min(remaining, 1.0))
    has_more = len(rows) > limit
    rows = rows[:limit]
    return JsonBody({"events": [event_view(r) for r in rows],
                     "next_cursor": str(rows[-1].seq) if rows else str(after_seq),
                     "has_more": has_more})
