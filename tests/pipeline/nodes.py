"""Two nodes on one database (conftest.py makes them): what the tests of what nodes share
(leases, the search index's queue) build on."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import make_engine
from storage.group_commit import GroupCommit
from storage.models import RECEIVED, Message
from tests.clock import ManualClock

MESSAGES = Message.__table__  # type: ignore[attr-defined]


class Node:
    """One node's engine and group committer."""

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self.engine: AsyncEngine = make_engine(url, busy_timeout=10)
        self.writer = GroupCommit(self.engine)
        self.task = asyncio.create_task(self.writer.run())

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.writer.close()
        await self.engine.dispose()


async def insert_messages(node: Node, count: int, clock: ManualClock,
                           age: float = 10.0) -> list[str]:
    when = clock.now() - timedelta(seconds=age)
    ids = [f"msg_{i:05d}" for i in range(count)]
    async with node.engine.begin() as conn:
        await conn.execute(MESSAGES.insert(), [{
            "id": mid, "status": RECEIVED, "mail_from": "s@example.org", "peer": "127.0.0.1",
            "size": 1, "raw_key": f"raw/{mid}.eml", "raw_sha256": "0" * 64,
            "received_at": when + timedelta(milliseconds=i), "attempts": 0,
            "attachment_count": 0, "defects": "[]"} for i, mid in enumerate(ids)])
    return ids
