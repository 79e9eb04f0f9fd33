"""Extraction jobs are claimed with leases, so exactly one worker on one node works a message.

A claim is one conditional UPDATE: it succeeds only when the message is unfinished and nobody
holds a live lease. The sweeper claims a batch at once, choosing rows with `FOR UPDATE SKIP
LOCKED` on PostgreSQL so that nodes sweeping together never wait on (or take) each other's rows;
SQLite has one writer at a time, which makes the same statement safe there. A node that dies
simply stops renewing; its leases expire and any node's sweeper claims the message again. Writes
go through the group committer; nothing here knows MIME.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.clock import SYSTEM, Clock
from daemon.events import event_rows, message_agents, record_events
from daemon.pipeline.results import received_events
from daemon.pipeline.verification import announcing
from storage.db import translated_errors
from storage.group_commit import GroupCommit
from storage.models import FAILED, PENDING, PROCESSING, UNFINISHED, Attachment, Message

MESSAGES = Message.__table__  # type: ignore[attr-defined]


def _claimable(now: datetime) -> Any:
    c = MESSAGES.c
    return and_(c.status.in_(UNFINISHED),
                or_(c.lease_expires_at.is_(None), c.lease_expires_at < now))


async def claim_message(writer: GroupCommit, message_id: str, owner: str,
                        lease: float, clock: Clock = SYSTEM) -> int | None:
    """Take the lease on `message_id`; returns the attempt number, None when someone else has it."""
    now = clock.now()
    c = MESSAGES.c

    def claim(conn: Connection) -> int | None:
        row = (conn.execute(
            update(MESSAGES).where(c.id == message_id, _claimable(now))
            .values(status=PROCESSING, lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease), attempts=c.attempts + 1)
            .returning(c.attempts))).first()
        return None if row is None else int(row[0])

    return await writer.write(claim)


async def renew_lease(writer: GroupCommit, message_id: str, owner: str, lease: float,
                      clock: Clock = SYSTEM) -> bool:
    """Extend our lease; False when it is no longer ours."""
    c = MESSAGES.c

    def renew(conn: Connection) -> bool:
        result = conn.execute(
            update(MESSAGES).where(c.id == message_id, c.lease_owner == owner)
            .values(lease_expires_at=clock.now() + timedelta(seconds=lease)))
        return bool(result.rowcount == 1)

    return await writer.write(renew)


async def release_lease(writer: GroupCommit, message_id: str, owner: str,
                        retry_in: float, clock: Clock = SYSTEM) -> None:
    """Give the message back, to be claimed again after `retry_in` seconds."""
    c = MESSAGES.c

    def release(conn: Connection) -> None:
        conn.execute(
            update(MESSAGES).where(c.id == message_id, c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=clock.now() + timedelta(seconds=retry_in)))

    await writer.write(release)


async def defer_after_transient(writer: GroupCommit, message_id: str, owner: str,
                                retry_for: float, lease_cap: float = 60.0,
                                clock: Clock = SYSTEM) -> bool:
    """Give the message back after a transient failure (store or database unavailable) without
    using up an attempt, as an MTA keeps mail queued through an outage; it is retried after a
    pause that grows with the time the message has waited (¼ of it, 2 s to `lease_cap` s).
    Returns False, changing nothing, once the message has waited `retry_for` seconds: the
    caller then fails it."""
    c = MESSAGES.c

    def defer(conn: Connection) -> bool:
        received = (conn.execute(select(c.received_at).where(
            c.id == message_id, c.lease_owner == owner))).scalar_one_or_none()
        if received is None:
            return True  # no longer ours: whoever holds it now decides
        now = clock.now()
        if received.tzinfo is None:
            received = received.replace(tzinfo=now.tzinfo)
        waited = (now - received).total_seconds()
        if waited >= retry_for:
            return False
        pause = min(max(waited / 4, 2.0), lease_cap)
        conn.execute(
            update(MESSAGES).where(c.id == message_id, c.lease_owner == owner)
            .values(lease_owner=None, attempts=c.attempts - 1,
                    lease_expires_at=now + timedelta(seconds=pause)))
        return True

    result: bool = await writer.write(defer)
    return result


async def claim_batch(writer: GroupCommit, owner: str, lease: float, limit: int,
                      older_than: float, clock: Clock = SYSTEM) -> list[tuple[str, int]]:
    """Take the lease on up to `limit` unfinished messages nobody holds, oldest first, received
    more than `older_than` seconds ago; returns (message id, attempt number) of each."""
    c = MESSAGES.c

    def claim(conn: Connection) -> list[tuple[str, int]]:
        now = clock.now()
        # A CTE, not `seq IN (subquery)`: PostgreSQL may run such a subquery more than once
        # per statement, and its LIMIT then stops bounding the rows updated.
        chosen = (select(c.seq)
                  .where(_claimable(now), c.received_at < now - timedelta(seconds=older_than))
                  .order_by(c.seq).limit(limit)
                  .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
                  .cte("chosen"))
        rows = (conn.execute(
            update(MESSAGES).where(c.seq == chosen.c.seq)
            .values(status=PROCESSING, lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease), attempts=c.attempts + 1)
            .returning(c.id, c.attempts, c.seq))).all()
        return [(str(r[0]), int(r[1])) for r in sorted(rows, key=lambda r: int(r[2]))]

    return await writer.write(claim)


async def release_node_leases(writer: GroupCommit, owner: str) -> int:
    """Give back every lease `owner` holds (a node stopping), for any node to claim at once."""
    c = MESSAGES.c

    def release(conn: Connection) -> int:
        result = conn.execute(
            update(MESSAGES).where(c.lease_owner == owner, c.status.in_(UNFINISHED))
            .values(lease_owner=None, lease_expires_at=None))
        return int(result.rowcount or 0)

    return await writer.write(release)


async def release_all_leases(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Free every lease (SQLite start-up: one node per database file, so none can be live)."""
    async with sessions() as session, translated_errors():
        result = await session.execute(
            update(MESSAGES).where(MESSAGES.c.status.in_(UNFINISHED))
            .values(lease_owner=None, lease_expires_at=None))
        await session.commit()
        return int(getattr(result, "rowcount", 0) or 0)


def record_failure(conn: Connection, message_id: str, node: str, reason: str,
                   now: datetime) -> None:
    """The message failed (`reason`), its pending attachments too, and message.failed said
    (after message.received, when that was not said yet), if `node` still holds its lease;
    else nothing: the node holding it decides."""
    m, a = Message.__table__.c, Attachment.__table__.c  # type: ignore[attr-defined]
    done = conn.execute(update(Message.__table__).where(  # type: ignore[attr-defined]
        m.id == message_id, m.lease_owner == node).values(
        status=FAILED, error=reason, processed_at=now, lease_owner=None, lease_expires_at=None))
    if not done.rowcount:
        return
    conn.execute(update(Attachment.__table__).where(  # type: ignore[attr-defined]
        a.message_id == message_id, a.status == PENDING).values(status=FAILED, error=reason))
    agents = message_agents(conn, message_id)
    events = event_rows(agents, "message.failed", message_id, now, status=FAILED)
    if announcing(conn, message_id):  # failed before it was said to have come
        events[:0] = received_events(agents, message_id, now, None)
    record_events(conn, events)
