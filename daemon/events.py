"""The event feed (SPEC §6 `GET /v1/events`): state changes per agent, in commit order.

Events are rows written in the same transaction as the change they report (ingest's insert,
the pipeline's final write, a message given up), so a reader never sees an event for a change
that did not commit, nor misses one that did; `seq` is the cursor and survives restarts. On
SQLite one writer commits at a time, so `seq` order is commit order; on PostgreSQL the writers
of events take the commit-order lock first (`storage.db.commit_in_order`), to the same effect
across every node. `Wakeups` lets a request waiting on this node hear of a change at once.
`event_view` is an event as the feed and webhooks show it (SPEC §6, §14).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

from daemon.clock import iso
from daemon.ids import event_id_for
from storage.db import commit_in_order
from storage.models import Event, Recipient

EVENTS = Event.__table__  # type: ignore[attr-defined]
RECIPIENTS = Recipient.__table__  # type: ignore[attr-defined]
MAX_CURSOR = 2**63 - 1
# Every type an event has (a webhook's `event_types` names some of them).
EVENT_TYPES = ("message.received", "attachment.pending", "attachment.ready",
               "attachment.rejected", "attachment.failed", "message.ready", "message.partial",
               "message.failed", "upload.ready", "message.sent", "message.delivered",
               "message.deferred", "message.bounced", "webhook.disabled")


class Wakeups:
    """Wakes the requests on this node that wait for a change made here: one instance per kind
    of change (a message's state, the event feed), `key` naming what changed (None: anything).

    Other nodes' changes wake nobody here, so a waiter passes `within` and re-reads its rows
    when it expires."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, asyncio.Event] = {}
        self.changes = 0  # wakes so far: a reader that saw it unchanged missed no wake

    def wake(self, key: Hashable = None) -> None:
        self.changes += 1
        event = self._waiting.pop(key, None)
        if event is not None:
            event.set()

    async def wait(self, within: float, key: Hashable = None) -> None:
        """Return when `key` changes on this node, or after `within` seconds."""
        event = self._waiting.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), within)


def event_rows(agent_ids: Iterable[str], kind: str, message_id: str | None, now: datetime,
               attachment_id: str | None = None, index: int | None = None,
               status: str | None = None, verdict: str | None = None,
               webhook_id: str | None = None) -> list[dict[str, Any]]:
    """The rows announcing one change to each agent that may see it (`verdict`: the sender
    authentication's, on message.received)."""
    return [{"agent_id": a, "type": kind, "message_id": message_id,
             "attachment_id": attachment_id, "index": index, "status": status,
             "verdict": verdict, "webhook_id": webhook_id, "created_at": now}
            for a in sorted(set(agent_ids))]


def event_view(row: Any) -> dict[str, Any]:
    """An event row as the feed shows it and a webhook carries it as `data`."""
    return {"id": event_id_for(row.seq), "cursor": str(row.seq), "type": row.type,
            "message_id": row.message_id, "attachment_id": row.attachment_id,
            "index": row.index, "status": row.status, "verdict": row.verdict,
            "webhook_id": row.webhook_id,
            # The message's, as it stands when the event is read (SPEC §15): null until
            # extraction has read it (a message.received may come first), and the preview
            # null for mail encrypted at rest.
            "thread_id": getattr(row, "message_thread_id", None),
            "preview": getattr(row, "message_preview", None),
            "created_at": iso(row.created_at)}


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
