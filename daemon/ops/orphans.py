"""Objects no message row points at, found and removed by `postroom gc`.

The durability rule (SPEC §4) writes a message's raw object before its row commits, so a node
killed between the two, or a commit that failed, leaves a raw object that no reader can reach:
the relay got no 250 and delivers the message again. Such objects are listed page by page
(`raw/` and `inbound/`), their message ids looked up in one query per page, and the ones without
a row deleted once they are older than a grace period: a younger one may belong to a transaction
still in flight on some node. Keys of any other shape are never touched.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import translated_errors
from storage.models import Message
from storage.objects import ObjectStore

log = structlog.get_logger("postroom.gc")

_OWNER = {
    "raw/": re.compile(r"raw/(msg_[0-9a-z]{26})\.eml"),
    "inbound/": re.compile(r"inbound/(msg_[0-9a-z]{26})/[A-Za-z0-9_.\-]+"),
}
PAGE = 1000


@dataclass
class OrphanReport:
    """What one pass found: objects seen, orphans removed, young ones left for later."""

    scanned: int = 0
    removed: list[str] = field(default_factory=list)
    too_young: int = 0


async def _known(sessions: async_sessionmaker[AsyncSession], ids: set[str]) -> set[str]:
    if not ids:
        return set()
    async with sessions() as session, translated_errors():
        rows = await session.exec(select(Message.id).where(
            Message.id.in_(ids)))  # type: ignore[attr-defined]
        return {str(r) for r in rows.all()}


async def remove_orphans(store: ObjectStore, sessions: async_sessionmaker[AsyncSession],
                         grace: float, dry_run: bool = False) -> OrphanReport:
    """Delete (or with `dry_run` only list) objects of messages that have no row."""
    report = OrphanReport()
    now = time.time()
    for prefix, pattern in _OWNER.items():
        after = ""
        while True:
            page = await store.list_keys(prefix, after, PAGE)
            if not page:
                break
            after = page[-1].key
            report.scanned += len(page)
            owners = {obj.key: m.group(1) for obj in page
                      if (m := pattern.fullmatch(obj.key)) is not None}
            known = await _known(sessions, set(owners.values()))
            for obj in page:
                owner = owners.get(obj.key)
                if owner is None or owner in known:
                    continue
                if now - obj.modified < grace:
                    report.too_young += 1
                    continue
                if not dry_run:
                    await store.delete(obj.key)
                report.removed.append(obj.key)
                log.info("gc.orphan_removed" if not dry_run else "gc.orphan_found",
                         key=obj.key, message_id=owner)
    return report
