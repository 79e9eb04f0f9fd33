"""Group commit: concurrent writes share a transaction; a failing write fails alone."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from storage.barrier import SyncBarrier, syncfs_available
from storage.db import make_engine
from storage.errors import DatabaseUnavailable, TransientError
from storage.group_commit import GroupCommit


async def test_concurrent_writes_are_committed_in_few_batches(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/g.db")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER UNIQUE)"))
    writer = GroupCommit(engine)
    runner = asyncio.create_task(writer.run())
    try:
        def insert(n: int):
            def write(conn: Connection) -> int:
                conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
                return n
            return write

        results = await asyncio.gather(*(writer.write(insert(n)) for n in range(200)))
        assert results == list(range(200))
        assert writer.writes == 200 and writer.batches < 20

        # A write that fails (a duplicate) fails alone; its neighbours in the batch commit.
        outcome = await asyncio.gather(writer.write(insert(1000)), writer.write(insert(5)),
                                       writer.write(insert(1001)), return_exceptions=True)
        assert outcome[0] == 1000 and outcome[2] == 1001
        assert isinstance(outcome[1], Exception)
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM t"))).scalar()
        assert count == 202
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        writer.close()
        await engine.dispose()


async def test_a_locked_database_fails_the_write_as_transient(tmp_path: Path) -> None:
    import sqlite3

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/l.db", busy_timeout=0.2)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER)"))
    writer = GroupCommit(engine, busy_timeout=0.2)
    runner = asyncio.create_task(writer.run())
    other = sqlite3.connect(tmp_path / "l.db")
    other.execute("BEGIN EXCLUSIVE")
    try:
        def write(conn: Connection) -> None:
            conn.execute(text("INSERT INTO t (n) VALUES (1)"))

        with pytest.raises(TransientError):
            await writer.write(write)
    finally:
        other.rollback()
        other.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        writer.close()
        await engine.dispose()


async def test_a_batch_meeting_a_locked_database_fails_at_once_not_write_by_write(
        tmp_path: Path) -> None:
    import sqlite3

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/l.db", busy_timeout=0.3)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER)"))
    writer = GroupCommit(engine, busy_timeout=0.3)
    other = sqlite3.connect(tmp_path / "l.db")
    other.execute("BEGIN EXCLUSIVE")
    try:
        def write(conn: Connection) -> None:
            conn.execute(text("INSERT INTO t (n) VALUES (1)"))

        pending = [asyncio.ensure_future(writer.write(write)) for _ in range(10)]
        runner = asyncio.create_task(writer.run())  # all ten queued: one batch
        outcome = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(o, DatabaseUnavailable) for o in outcome), outcome
        # One transaction tried (one busy timeout waited), not one more per write.
        assert (writer.batches, writer.failures) == (0, 1)
    finally:
        other.rollback()
        other.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        writer.close()
        await engine.dispose()


@pytest.mark.skipif(not syncfs_available(), reason="syncfs() is Linux-only")
async def test_the_sync_barrier_coalesces_concurrent_writers(tmp_path: Path) -> None:
    pool = ThreadPoolExecutor(4)
    barrier = SyncBarrier(tmp_path, pool)

    async def writer(i: int) -> None:
        (tmp_path / f"f{i}").write_bytes(os.urandom(100))
        await barrier.sync()

    await asyncio.gather(*(writer(i) for i in range(100)))
    assert 1 <= barrier.rounds < 100
    await barrier.sync()  # a later caller gets a round of its own
    pool.shutdown()
