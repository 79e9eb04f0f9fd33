"""What `postroom messages list|show` prints for operators: rows, never content.

An operator sees what the database holds (envelope, headers of note, statuses, errors, defects,
attachment names and digests), as the API would show it to the owning agents, plus what only an
operator needs (lease, attempts, object keys). Bodies and attachment bytes are never read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.agents import AgentError, find_agent
from daemon.api import attachment_view, iso, message_summary
from storage.db import translated_errors
from storage.models import Attachment, Message, Recipient


async def operator_list(sessions: async_sessionmaker[AsyncSession], status: str | None = None,
                        agent: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` messages, optionally of one status or one agent."""
    agent_id = None
    if agent is not None:
        info = await find_agent(sessions, agent)
        if info is None:
            raise AgentError(f"no agent {agent!r}")
        agent_id = info.id
    async with sessions() as session, translated_errors():
        query = select(Message).order_by(col(Message.seq).desc()).limit(max(1, min(limit, 10000)))
        if status:
            query = query.where(Message.status == status)
        if agent_id:
            query = query.where(col(Message.id).in_(
                select(Recipient.message_id).where(Recipient.agent_id == agent_id)))
        messages = (await session.exec(query)).all()
        recipients = (await session.exec(select(Recipient).where(
            col(Recipient.message_id).in_([m.id for m in messages])))).all()
    by_message: dict[str, list[Recipient]] = {}
    for r in recipients:
        by_message.setdefault(r.message_id, []).append(r)
    return [message_summary(m, by_message.get(m.id, [])) for m in messages]


async def operator_show(sessions: async_sessionmaker[AsyncSession],
                        message_id: str) -> dict[str, Any]:
    """One message with its recipients (and their agents), attachments and housekeeping."""
    async with sessions() as session, translated_errors():
        message = (await session.exec(select(Message).where(Message.id == message_id))).first()
        if message is None:
            raise AgentError(f"no message {message_id!r}")
        recipients = (await session.exec(select(Recipient).where(
            Recipient.message_id == message_id))).all()
        attachments = (await session.exec(select(Attachment).where(
            Attachment.message_id == message_id).order_by(col(Attachment.index)))).all()
    view = message_summary(message, list(recipients))
    view.update({
        "agents": sorted({r.agent_id for r in recipients}),
        "defects": message.defects, "pgp": message.pgp, "smime": message.smime,
        "encrypted_to": message.encrypted_to, "signature": message.signature,
        "raw_key": message.raw_key, "raw_sha256": message.raw_sha256,
        "peer": message.peer, "attempts": message.attempts,
        "lease_owner": message.lease_owner, "lease_expires_at": iso(message.lease_expires_at),
        "attachments": [{**attachment_view(a), "object_key": a.object_key}
                        for a in attachments],
    })
    return view
