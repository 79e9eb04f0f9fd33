"""Retention and repair (SPEC §3 `retention.days`, §7 `gc`, `reprocess`, `messages`).

Purging deletes the objects of messages received more than `retention.days` ago (raw, bodies,
attachments) and keeps their rows as `purged`, so an agent still sees that the mail existed.
Objects go first and the rows follow, page by page: a purge cut short is finished by the next
one. Reprocessing hands a message back to the pipeline (`received`, no lease): any node's sweeper
extracts it again from its raw object, attachment ids surviving. Both are safe to run while
daemons serve and on several nodes at once.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.agents import utcnow
from daemon.ops.orphans import remove_orphans
from storage.db import translated_errors
from storage.errors import TransientError
from storage.models import (
    FAILED,
    OUTBOUND,
    PARTIAL,
    PURGED,
    READY,
    RECEIVED,
    Attachment,
    Message,
)
from storage.objects import ObjectStore
from storage.search import forget_messages

log = structlog.get_logger("postroom.retention")

MESSAGES = Message.__table__  # type: ignore[attr-defined]
ATTACHMENTS = Attachment.__table__  # type: ignore[attr-defined]
PAGE = 200


class RepairError(Exception):
    """A message that cannot be reprocessed; the text says why."""


async def purge_expired(store: ObjectStore, sessions: async_sessionmaker[AsyncSession],
                        days: int, now: datetime | None = None) -> list[str]:
    """Purge every message received before `days` ago; returns their ids (0 days: none)."""
    if days <= 0:
        return []
    cutoff = (now or utcnow()) - timedelta(days=days)
    purged: list[str] = []
    while True:
        async with sessions() as session, translated_errors():
            rows = (await session.execute(
                select(MESSAGES.c.seq, MESSAGES.c.id, MESSAGES.c.raw_key, MESSAGES.c.text_key,
                       MESSAGES.c.html_key, MESSAGES.c.extracted_key)
                .where(MESSAGES.c.received_at < cutoff, MESSAGES.c.status != PURGED)
                .order_by(MESSAGES.c.seq).limit(PAGE))).all()
            if not rows:
                return purged
            seqs = [int(r[0]) for r in rows]
            ids = [str(r[1]) for r in rows]
            keys = sorted({str(k) for r in rows for k in r[2:] if k})
            keys += [str(k) for row in (await session.execute(
                select(ATTACHMENTS.c.object_key, ATTACHMENTS.c.text_key).where(
                    ATTACHMENTS.c.message_id.in_(ids)))).all() for k in row if k]
        for key in keys:  # absent objects are no error: a purge cut short is re-run
            await store.delete(key)
        async with sessions() as session, translated_errors():
            await session.execute(update(ATTACHMENTS).where(ATTACHMENTS.c.message_id.in_(ids))
                                  .values(status=PURGED, object_key=None, text_key=None))
            await session.execute(update(MESSAGES).where(MESSAGES.c.id.in_(ids)).values(
                status=PURGED, lease_owner=None, lease_expires_at=None, dedupe_key=None,
                preview=None))  # what it said goes with its bytes
            await (await session.connection()).run_sync(forget_messages, seqs)
            await session.commit()
        for message_id in ids:
            log.info("message.state", message_id=message_id, status=PURGED)
        purged += ids


@dataclass
class GcReport:
    purged: list[str]
    orphans: list[str]
    scanned: int
    too_young: int


async def collect(store: ObjectStore, sessions: async_sessionmaker[AsyncSession], days: int,
                  grace: float, orphans: bool = True, dry_run: bool = False) -> GcReport:
    """`postroom gc`: purge what retention says, then remove orphan objects."""
    purged = [] if dry_run else await purge_expired(store, sessions, days)
    report = await remove_orphans(store, sessions, grace, dry_run=dry_run) if orphans else None
    return GcReport(purged, report.removed if report else [], report.scanned if report else 0,
                    report.too_young if report else 0)


async def run_periodically(store: ObjectStore, sessions: async_sessionmaker[AsyncSession],
                           days: int, every: float = 3600.0, orphans_every: int = 24) -> None:
    """The daemon's own gc: a purge every `every` seconds (jittered, so nodes spread out) and
    an orphan sweep every `orphans_every` purges; failures are logged and retried next time."""
    rounds = 0
    while True:
        await asyncio.sleep(every * random.uniform(0.5, 1.0))
        rounds += 1
        try:
            report = await collect(store, sessions, days, grace=3600.0,
                                   orphans=rounds % orphans_every == 0)
        except TransientError as e:
            log.warning("gc.failed", error=str(e))
            continue
        if report.purged or report.orphans:
            log.info("gc.done", purged=len(report.purged), orphans=len(report.orphans))


async def reprocess(sessions: async_sessionmaker[AsyncSession], message_ids: list[str] | None,
                    failed: bool = False, content: bool = False) -> list[str]:
    """Hand messages back to the pipeline: those named, every `failed` one, or (`content`)
    every one extracted before postroom read text (SPEC §15: inbound, ready or partial, not
    encrypted at rest, no `preview`). Refused for a purged message (no raw object) and for one
    encrypted at rest (no plaintext to read)."""
    async with sessions() as session, translated_errors():
        query = select(MESSAGES.c.id, MESSAGES.c.status, MESSAGES.c.encrypted_to,
                       MESSAGES.c.direction)
        if failed:
            query = query.where(MESSAGES.c.status == FAILED)
        elif content:
            query = query.where(MESSAGES.c.direction != OUTBOUND,
                                MESSAGES.c.status.in_((READY, PARTIAL)),
                                MESSAGES.c.encrypted_to.is_(None),
                                MESSAGES.c.preview.is_(None))
        else:
            query = query.where(MESSAGES.c.id.in_(message_ids or []))
        rows = (await session.execute(query)).all()
        found = {str(r[0]): r for r in rows}
        for message_id in message_ids or []:
            if message_id not in found:
                raise RepairError(f"no message {message_id!r}")
        for message_id, status, encrypted_to, direction in rows:
            if direction == OUTBOUND:
                raise RepairError(f"{message_id} is outbound: it was composed here, not received")
            if status == PURGED:
                raise RepairError(f"{message_id} is purged: its raw object is gone")
            if encrypted_to:
                raise RepairError(f"{message_id} is encrypted at rest: postroom cannot read "
                                  "its raw object again")
        ids = sorted(found)
        if ids:
            await session.execute(update(MESSAGES).where(MESSAGES.c.id.in_(ids)).values(
                status=RECEIVED, lease_owner=None, lease_expires_at=None, attempts=0,
                error=None))
            await session.commit()
    for message_id in ids:
        log.info("message.reprocess", message_id=message_id)
    return ids
