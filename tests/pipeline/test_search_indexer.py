"""The search index's queue on both databases: rows queued with a message's results are indexed
many to a transaction by `SearchIndexer`, a search waiting for none of its delay, a message
queued again indexed as its last version, forgotten ones gone from queue and index, rows left by
a crash indexed when an indexer starts, and two nodes indexing at once taking each row once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import Connection, select, text

from daemon.pipeline.indexer import SearchIndexer
from storage.models import Message, Recipient
from storage.search import forget_messages, queue_message, search
from tests.clock import ManualClock
from tests.content import documents
from tests.pipeline.nodes import Node, insert_messages

MESSAGES = Message.__table__  # type: ignore[attr-defined]
RECIPIENTS = Recipient.__table__  # type: ignore[attr-defined]
AGENT = "agt_search"


async def _mail(node: Node, count: int, clock: ManualClock) -> dict[str, int]:
    """`count` messages of AGENT's: id → seq."""
    ids = await insert_messages(node, count, clock)
    async with node.engine.begin() as conn:
        seqs = {str(r[0]): int(r[1]) for r in await conn.execute(
            select(MESSAGES.c.id, MESSAGES.c.seq).where(MESSAGES.c.id.in_(ids)))}
        await conn.execute(RECIPIENTS.insert(), [
            {"message_seq": seq, "message_id": mid, "agent_id": AGENT, "address": "a@x.test"}
            for mid, seq in seqs.items()])
    return seqs


async def _queue(node: Node, message_id: str, body: str) -> None:
    """Queue a message as its results do: in a transaction of the writer's own."""
    def write(conn: Connection) -> None:
        queue_message(conn, message_id, "a subject", "s@example.org a@x.test", body)

    await node.writer.write(write)


async def _found(node: Node, word: str) -> set[int]:
    async with node.engine.connect() as conn:
        return set(await search(conn, AGENT, word, 1000, 0))


async def _pending(node: Node) -> int:
    async with node.engine.connect() as conn:
        return int((await conn.execute(
            text("SELECT count(*) FROM message_search_pending"))).scalar_one())


@contextlib.asynccontextmanager
async def _running(indexer: SearchIndexer) -> AsyncIterator[SearchIndexer]:
    task = asyncio.create_task(indexer.run())
    try:
        yield indexer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(200):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_burst_is_indexed_in_one_transaction_when_a_search_asks(
        nodes: tuple[Node, Node], clock: ManualClock) -> None:
    a, _ = nodes
    seqs = await _mail(a, 40, clock)
    word, other = documents.marker_words(2)
    # A minute's delay: only the search's asking gets the queue indexed in time.
    async with _running(SearchIndexer(a.writer, delay=60.0)) as indexer:
        await indexer.caught_up()  # the first round (the queue is empty)
        for mid in seqs:
            await _queue(a, mid, f"the body says {word}")
            indexer.queued()
        assert await _found(a, word) == set()  # queued, not indexed
        await asyncio.wait_for(indexer.caught_up(), 10)
        assert await _found(a, word) == set(seqs.values())
        assert indexer.batches == 1 and await _pending(a) == 0
        assert await _found(a, other) == set()


async def test_batches_are_bounded_and_a_delay_gathers_without_a_search(
        nodes: tuple[Node, Node], clock: ManualClock) -> None:
    a, _ = nodes
    seqs = await _mail(a, 30, clock)
    (word,) = documents.marker_words(1)
    async with _running(SearchIndexer(a.writer, delay=0.2, batch=7)) as indexer:
        await indexer.caught_up()
        for mid in seqs:
            await _queue(a, mid, word)
            indexer.queued()

        async def indexed() -> bool:
            return await _pending(a) == 0 and indexer.batches == 5  # 7 + 7 + 7 + 7 + 2

        await _until(indexed, "the delay to pass")
        assert await _found(a, word) == set(seqs.values())


async def test_a_message_queued_again_is_indexed_as_its_last_version(
        nodes: tuple[Node, Node], clock: ManualClock) -> None:
    a, _ = nodes
    (mid, seq), = (await _mail(a, 1, clock)).items()
    first, second, third = documents.marker_words(3)
    async with _running(SearchIndexer(a.writer, delay=60.0)) as indexer:
        for body in (first, second):  # both queued before a round
            await _queue(a, mid, body)
            indexer.queued()
        await indexer.caught_up()
        assert (await _found(a, first), await _found(a, second)) == (set(), {seq})
        await _queue(a, mid, third)  # extracted again, later
        indexer.queued()
        await indexer.caught_up()
        assert (await _found(a, second), await _found(a, third)) == (set(), {seq})


async def test_forgotten_messages_leave_the_queue_and_the_index(
        nodes: tuple[Node, Node], clock: ManualClock) -> None:
    a, _ = nodes
    (indexed, indexed_seq), (queued, queued_seq) = (await _mail(a, 2, clock)).items()
    (word,) = documents.marker_words(1)
    async with _running(SearchIndexer(a.writer, delay=60.0)) as indexer:
        await _queue(a, indexed, word)
        indexer.queued()
        await indexer.caught_up()
        await _queue(a, queued, word)
        assert await _found(a, word) == {indexed_seq}

        def forget(conn: Connection) -> None:
            forget_messages(conn, [indexed_seq, queued_seq])

        await a.writer.write(forget)
        indexer.queued()
        await indexer.caught_up()
        assert await _found(a, word) == set() and await _pending(a) == 0


async def test_rows_a_crash_left_queued_are_indexed_when_an_indexer_starts(
        nodes: tuple[Node, Node], clock: ManualClock) -> None:
    a, b = nodes
    seqs = await _mail(a, 12, clock)
    (word,) = documents.marker_words(1)
    for mid in seqs:  # node a queued them and died before its indexer ran
        await _queue(a, mid, word)
    async with _running(SearchIndexer(b.writer, delay=60.0, sweep=60.0)) as indexer:
        await asyncio.wait_for(indexer.caught_up(), 10)  # what was there at the start
        assert await _pending(b) == 0 and indexer.batches == 1
    assert await _found(b, word) == set(seqs.values())


@pytest.mark.parametrize("batch", [5, 500])
async def test_two_nodes_indexing_at_once_take_each_row_once(
        nodes: tuple[Node, Node], clock: ManualClock, batch: int) -> None:
    a, b = nodes
    seqs = await _mail(a, 120, clock)
    (word,) = documents.marker_words(1)
    ids = list(seqs)
    indexers = SearchIndexer(a.writer, delay=60.0, batch=batch), \
        SearchIndexer(b.writer, delay=60.0, batch=batch)
    async with _running(indexers[0]), _running(indexers[1]):
        for i, mid in enumerate(ids):
            node, indexer = (a, indexers[0]) if i % 2 else (b, indexers[1])
            await _queue(node, mid, word)
            indexer.queued()
            if i % 17 == 0:  # both take what is there, while more is queued
                await asyncio.gather(*(x.caught_up() for x in indexers))
        await asyncio.gather(*(x.caught_up() for x in indexers))
        assert await _pending(a) == 0
    assert await _found(a, word) == set(seqs.values())
    async with a.engine.connect() as conn:  # one index row a message, none twice
        column = "seq" if conn.dialect.name == "postgresql" else "rowid"
        rows = (await conn.execute(text(f"SELECT {column} FROM message_search"))).all()
    assert sorted(int(r[0]) for r in rows) == sorted(seqs.values())
