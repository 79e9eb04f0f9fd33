"""The agents' upload rows (SPEC §6 uploads): recording one, turning it `ready` exactly once with
its `upload.ready` event, reading an agent's own, and the URL that downloads it.

An agent reaches only its own rows here. Nothing here reads an upload's bytes: a row turns ready
when the store holds them (a direct or local upload says so; a presigned one is asked for).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import select

from daemon.agents import utcnow
from daemon.api.deps import AppContext
from daemon.api.errors import not_found
from daemon.events import event_rows, record_events
from daemon.ids import new_upload_id
from storage.db import translated_errors
from storage.models import PENDING, READY, Upload
from storage.objects import PresignedGet
from storage.presign import download_content_type

UPLOAD_COL: Any = Upload.__table__.c  # type: ignore[attr-defined]


async def record_upload(ctx: AppContext, agent_id: str, key: str, file_name: str,
                        content_type: str, flow: str, expires_at: float | None = None,
                        **known: Any) -> Upload:
    """A new row for an upload under `key`; `known` sets other columns (`status=READY` also
    records its event)."""
    row = Upload(id=new_upload_id(), agent_id=agent_id, object_key=key, file_name=file_name,
                 content_type=content_type, flow=flow, created_at=utcnow(),
                 expires_at=(None if expires_at is None
                             else datetime.fromtimestamp(expires_at, UTC)),
                 status=known.pop("status", PENDING), **known)
    async with ctx.sessions() as session, translated_errors():
        session.add(row)
        if row.status == READY:
            await (await session.connection()).run_sync(record_events, event_rows(
                [agent_id], "upload.ready", None, utcnow(), attachment_id=row.id,
                status=READY))
        await session.commit()
    if row.status == READY:
        ctx.events.wake()
    return row


async def mark_upload_ready(ctx: AppContext, key: str, size: int, sha256: str | None) -> None:
    """The pending row of `key` is `ready` with `size` and `sha256`, and its event recorded."""
    async with ctx.sessions() as session, translated_errors():
        flipped = (await session.execute(
            update(Upload).where(UPLOAD_COL.object_key == key, UPLOAD_COL.status == PENDING)
            .values(status=READY, size=size, sha256=sha256, ready_at=utcnow())
            .returning(UPLOAD_COL.id, UPLOAD_COL.agent_id))).first()
        if flipped is not None:  # once, however many requests notice it together
            await (await session.connection()).run_sync(record_events, event_rows(
                [str(flipped[1])], "upload.ready", None, utcnow(),
                attachment_id=str(flipped[0]), status=READY))
        await session.commit()
    ctx.events.wake()


async def _refreshed(ctx: AppContext, row: Upload) -> Upload:
    """The row, `ready` (with its size) once the object is in the store."""
    if row.status != PENDING:
        return row
    size = await ctx.store.size(row.object_key)
    if size is None:
        return row
    if row.flow == "url" and row.size is not None and size != row.size:
        # A presigned PUT signs its length; a store that did not check it (an S3 look-alike)
        # holds other bytes than were declared: as the local store does, they are not taken.
        await ctx.store.delete(row.object_key)
        return row
    await mark_upload_ready(ctx, row.object_key, size, row.sha256)
    row.status, row.size, row.ready_at = READY, size, utcnow()
    return row


async def own_upload(ctx: AppContext, agent_id: str, **where: str) -> Upload:
    """The agent's upload whose columns have the values `where` names; 404 if it has none."""
    async with ctx.sessions() as session, translated_errors():
        stmt = select(Upload).where(UPLOAD_COL.agent_id == agent_id)
        for name, value in where.items():
            stmt = stmt.where(UPLOAD_COL[name] == value)
        row = (await session.exec(stmt)).first()
    if row is None:
        raise not_found("upload")
    return await _refreshed(ctx, row)


async def upload_link(ctx: AppContext, row: Upload, expires_in: float) -> PresignedGet | None:
    """A URL that downloads the upload, None until it is ready."""
    if row.status != READY:
        return None
    return await ctx.store.presign_get(row.object_key, expires_in=expires_in,
                                       file_name=row.file_name,
                                       content_type=download_content_type(row.content_type))
