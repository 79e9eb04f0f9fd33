"""Extraction jobs are claimed with leases, so exactly one worker on one node works a message.

A claim is one conditional UPDATE: it succeeds only when the message is unfinished and nobody
holds a live lease. A node that dies simply stops renewing; its leases expire and any node's
sweeper finds the message again. Nothing here knows about MIME.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.agents import utcnow
from storage.db import translated_errors
from storage.models import PROCESSING, UNFINISHED, Message


def _claimable(now: datetime) -> object:
    return and_(col(Message.status).in_(UNFINISHED),
                or_(col(Message.lease_expires_at).is_(None), col(Message.lease_expires_at) < now))


async def claim_message(sessions: async_sessionmaker[AsyncSession], message_id: str,
                        owner: str, lease: float) -> int | None:
    """Take the lease on `message_id`; returns the attempt number, None when someone else has it."""
    now = utcnow()
    async with sessions() as session, translated_errors():
        result = await session.exec(
            update(Message)
            .where(col(Message.id) == message_id, _claimable(now))  # type: ignore[arg-type]
            .values(status=PROCESSING, lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease),
                    attempts=col(Message.attempts) + 1))
        await session.commit()
        if result.rowcount != 1:
            return None
        attempts = (await session.exec(select(Message.attempts)
                                       .where(Message.id == message_id))).one()
    return attempts


async def renew_lease(sessions: async_sessionmaker[AsyncSession], message_id: str, owner: str,
                      lease: float) -> bool:
    """Extend our lease; False when it is no longer ours."""
    async with sessions() as session, translated_errors():
        result = await session.exec(
            update(Message)
            .where(col(Message.id) == message_id, col(Message.lease_owner) == owner)
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease)))
        await session.commit()
        return bool(result.rowcount == 1)


async def release_lease(sessions: async_sessionmaker[AsyncSession], message_id: str, owner: str,
                        retry_in: float) -> None:
    """Give the message back, to be claimed again after `retry_in` seconds."""
    async with sessions() as session, translated_errors():
        await session.exec(
            update(Message)
            .where(col(Message.id) == message_id, col(Message.lease_owner) == owner)
            .values(lease_owner=None, lease_expires_at=utcnow() + timedelta(seconds=retry_in)))
        await session.commit()


async def find_claimable(sessions: async_sessionmaker[AsyncSession], limit: int,
                         older_than: float) -> list[str]:
    """Unfinished messages nobody holds, received more than `older_than` seconds ago."""
    now = utcnow()
    async with sessions() as session, translated_errors():
        rows = await session.exec(
            select(Message.id)
            .where(_claimable(now),  # type: ignore[arg-type]
                   col(Message.received_at) < now - timedelta(seconds=older_than))
            .order_by(col(Message.seq)).limit(limit))
        return list(rows.all())


async def release_all_leases(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Free every lease (SQLite start-up: one node per database file, so none can be live)."""
    async with sessions() as session, translated_errors():
        result = await session.exec(
            update(Message).where(col(Message.status).in_(UNFINISHED))
            .values(lease_owner=None, lease_expires_at=None))
        await session.commit()
        return int(result.rowcount or 0)
