"""The event feed (SPEC §6 `GET /v1/events`): state changes per agent, in commit order.

Events are rows written in the same transaction as the change they report (ingest's insert,
the pipeline's final write, a message given up), so a reader never sees an event for a change
that did not commit, nor misses one that did; `seq` is the cursor and survives restarts. On
SQLite one writer commits at a time, so `seq` order is commit order; on PostgreSQL the writers
of events take the commit-order lock first (`storage.db.commit_in_order`), to the same effect
across every node. A long poll is woken by
writes on this node and re-reads at least every second for writes of other nodes.

No `from __future__ import annotations`: FastAPI must see the route's annotations as objects
(the agent dependency is a local of `events_router`).
"""

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.api_errors import ApiError
from daemon.views import JsonBody
from storage.db import commit_in_order, translated_errors
from storage.models import Event, Recipient

EVENTS = Event.__table__  # type: ignore[attr-defined]
RECIPIENTS = Recipient.__table__  # type: ignore[attr-defined]
MAX_CURSOR = 2**63 - 1


class EventBus:
    """Wakes long polls on this node once events have been committed here."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), within)


def event_rows(agent_ids: Iterable[str], kind: str, message_id: str | None, now: datetime,
               attachment_id: str | None = None, index: int | None = None,
               status: str | None = None) -> list[dict[str, Any]]:
    """The rows announcing one change to each agent that may see it."""
    return [{"agent_id": a, "type": kind, "message_id": message_id,
             "attachment_id": attachment_id, "index": index, "status": status,
             "created_at": now} for a in sorted(set(agent_ids))]


# Built once: building and coercing a statement per call cost as much as running it.
_MESSAGE_AGENTS = (select(RECIPIENTS.c.agent_id).distinct()
                   .where(RECIPIENTS.c.message_id == bindparam("message_id")))
_EVENT_INSERT = EVENTS.insert()


def message_agents(conn: Connection, message_id: str) -> list[str]:
    """The agents a message is addressed to (inside the caller's transaction)."""
    rows = conn.execute(_MESSAGE_AGENTS, {"message_id": message_id})
    return [str(r[0]) for r in rows.all()]


def record_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert event rows in the caller's transaction, their `seq` in commit order (from an
    AsyncConnection: `await conn.run_sync(record_events, rows)`)."""
    if rows:
        commit_in_order(conn)
        conn.execute(_EVENT_INSERT, list(rows))


class EventView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cursor: str
    type: str
    message_id: str | None
    attachment_id: str | None
    index: int | None
    status: str | None
    created_at: str


class EventList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventView]
    next_cursor: str
    has_more: bool


def _view(row: Any) -> dict[str, Any]:
    created: datetime = row.created_at
    return {"cursor": str(row.seq), "type": row.type, "message_id": row.message_id,
            "attachment_id": row.attachment_id, "index": row.index, "status": row.status,
            "created_at": created.isoformat().replace("+00:00", "Z")}


def events_router(sessions: async_sessionmaker[AsyncSession], bus: EventBus,
                  agent_dependency: Any, max_wait: float) -> APIRouter:
    """`GET /v1/events`, authenticated by `agent_dependency` (the API's key check)."""
    router = APIRouter()

    async def read(agent_id: str, after: int, limit: int) -> list[Any]:
        c = EVENTS.c
        async with sessions() as session, translated_errors():
            result = await session.execute(
                select(EVENTS).where(c.agent_id == agent_id, c.seq > after)
                .order_by(c.seq).limit(limit + 1))
            return list(result.all())

    @router.get("/v1/events", tags=["events"], response_model=EventList)
    async def list_events(
        agent_id: agent_dependency,
        after: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        wait: Annotated[float, Query(ge=0, le=30)] = 0,
    ) -> Response:
        """The agent's events after `after`, oldest first; `?wait=` (≤ 30 s) holds the request
        until there is at least one. `next_cursor` resumes exactly where this answer ended."""
        after_seq = int(after) if after and after.isascii() and after.isdigit() else -1
        if after and not 0 <= after_seq <= MAX_CURSOR:
            raise ApiError(400, "invalid_cursor", "after is not a cursor from this API")
        after_seq = max(after_seq, 0)
        deadline = time.monotonic() + min(wait, max_wait)
        while True:
            rows = await read(agent_id, after_seq, limit)
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                break
            await bus.wait(min(remaining, 1.0))
        has_more = len(rows) > limit
        rows = rows[:limit]
        return JsonBody({"events": [_view(r) for r in rows],
                         "next_cursor": str(rows[-1].seq) if rows else str(after_seq),
                         "has_more": has_more})

    return router
