"""Group commit: one writer runs every queued write in one transaction, one fsync for all.

SQLite has one write lock; sixteen connections each committing for themselves queue on it with
sleeping back-offs and pay an fsync apiece. Here each write is a small synchronous function of a
connection; the writer task takes everything queued, runs it in one transaction and commits
once, and only then answers each caller, so "committed" still means committed. On SQLite the
whole batch runs in the writer's own thread on a plain sqlite3 connection (one hop per batch,
not one per statement, and no SQL building on the event loop); elsewhere it runs through the
async connection (`run_sync`). A batch that fails is retried one
write at a time, so one bad write cannot take its neighbours down with it, unless the database
itself is unavailable (`DatabaseUnavailable`): then every write of the batch fails at once.

On PostgreSQL each batch holds the commit-order lock (`storage.db.commit_in_order`) from its
start, so the batches of all nodes commit one after another and never wait on each other's rows
in a cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import make_writer_engine, ordered_transaction, translated_errors
from storage.errors import DatabaseUnavailable

T = TypeVar("T")
Write = Callable[[Connection], Any]


@dataclass
class _Pending:
    write: Write
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop()
                                        .create_future())


class GroupCommit:
    """The single writer of one database."""

    def __init__(self, engine: AsyncEngine, max_batch: int = 256,
                 busy_timeout: float = 5.0) -> None:
        self._engine = engine
        self._sync = make_writer_engine(engine, busy_timeout)
        self._thread = (ThreadPoolExecutor(1, thread_name_prefix="db-writer")
                        if self._sync is not None else None)
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.batches = 0
        self.writes = 0
        self.failures = 0  # transactions that failed (a batch, or one write retried alone)

    def close(self) -> None:
        """Let go of the writer's thread and connection (after `run` has stopped)."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._sync is not None:
            self._sync.dispose()

    async def write(self, write: Callable[[Connection], T]) -> T:
        """Run `write` in the next batch; returns its result once the batch is committed.

        `write` runs in another thread (SQLite) or under a greenlet (PostgreSQL): it may only
        use the connection and the data it was given, never the event loop."""
        pending = _Pending(write)
        self._queue.put_nowait(pending)
        result: T = await pending.future
        return result

    async def run(self) -> None:
        """The writer task: forever take what is queued and commit it together."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [p for p in batch if not p.future.cancelled()]
            if not batch:
                continue
            try:
                await self._commit(batch)
            except DatabaseUnavailable as e:
                # The database is away: no write would fare better alone, and trying each in
                # turn would make the last caller wait a timeout per neighbour.
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(e)
            except Exception:
                if len(batch) == 1:
                    continue  # _commit already answered it
                for pending in batch:  # isolate the write that failed
                    if not pending.future.done():
                        with contextlib.suppress(Exception):
                            await self._commit([pending])

    async def _commit(self, batch: list[_Pending]) -> None:
        results: list[Any] = []
        writes = [p.write for p in batch]
        try:
            async with translated_errors():
                if self._sync is not None:
                    results = await asyncio.get_running_loop().run_in_executor(
                        self._thread, self._run_in_thread, writes)
                else:
                    async with self._engine.begin() as conn:
                        results = await conn.run_sync(_run_writes, writes)
        except Exception as e:
            self.failures += 1
            if len(batch) == 1 and not batch[0].future.done():
                batch[0].future.set_exception(e)
            raise
        self.batches += 1
        self.writes += len(batch)
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    def _run_in_thread(self, writes: list[Write]) -> list[Any]:
        assert self._sync is not None
        with self._sync.begin() as conn:
            return _run_writes(conn, writes)


def _run_writes(conn: Connection, writes: list[Write]) -> list[Any]:
    with ordered_transaction(conn):
        return [write(conn) for write in writes]
