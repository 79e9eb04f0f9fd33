"""Leases and commit order on both databases: real SQLite files and the machine's PostgreSQL.

Two engines stand for two nodes on one database: their claims never overlap, a lease that
expires passes to the other node, and the event cursor never skips a row that commits late.
Both nodes read one `ManualClock`: a lease expires, and a message ages, when the test says so.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from sqlalchemy import Connection, select, text, update

from daemon.agents import utcnow
from daemon.events import event_rows, record_events
from daemon.pipeline.leases import (
    claim_batch,
    claim_message,
    defer_after_transient,
    release_lease,
    release_node_leases,
    renew_lease,
)
from storage.models import PROCESSING, READY, RECEIVED, Event, Message
from tests.clock import ManualClock
from tests.pgserver import PgServer
from tests.pipeline.nodes import Node, insert_messages

MESSAGES = Message.__table__  # type: ignore[attr-defined]
EVENTS = Event.__table__  # type: ignore[attr-defined]


async def _leases(node: Node) -> dict[str, tuple[str | None, int, str]]:
    async with node.engine.connect() as conn:
        rows = await conn.execute(select(MESSAGES.c.id, MESSAGES.c.lease_owner,
                                         MESSAGES.c.attempts, MESSAGES.c.status))
        return {r[0]: (r[1], int(r[2]), r[3]) for r in rows.all()}


async def test_a_batch_claim_takes_the_oldest_and_leaves_the_young(
        nodes: tuple[Node, Node], clock: ManualClock) -> None:
    a, _ = nodes
    ids = await insert_messages(a, 5, clock)
    young = "msg_young"
    async with a.engine.begin() as conn:
        await conn.execute(MESSAGES.insert(), [{
            "id": young, "status": RECEIVED, "mail_from": "", "peer": "x", "size": 1,
            "raw_key": "raw/y.eml", "raw_sha256": "0" * 64, "received_at": clock.now(),
            "attempts": 0, "attachment_count": 0, "defects": "[]"}])
    claimed = await claim_batch(a.writer, a.name, 30, limit=3, older_than=1.0, clock=clock)
    assert claimed == [(ids[0], 1), (ids[1], 1), (ids[2], 1)]
    rest = await claim_batch(a.writer, a.name, 30, limit=100, older_than=1.0, clock=clock)
    assert rest == [(ids[3], 1), (ids[4], 1)]  # the young one waits for ingest's own queue
    leases = await _leases(a)
    assert leases[young] == (None, 0, RECEIVED)
    assert all(leases[i] == (a.name, 1, PROCESSING) for i in ids)
    assert await claim_batch(a.writer, a.name, 30, limit=100, older_than=1.0, clock=clock) == []
    await clock.advance(1.5)  # older than a second now: the sweeper's to take
    assert await claim_batch(a.writer, a.name, 30, limit=100, older_than=1.0, clock=clock) == [
        (young, 1)]


async def test_two_nodes_claiming_at_once_never_share_a_message(
        nodes: tuple[Node, Node], clock: ManualClock) -> None:
    a, b = nodes
    ids = await insert_messages(a, 400, clock)

    async def sweep(node: Node) -> list[str]:
        got: list[str] = []
        while True:
            batch = await claim_batch(node.writer, node.name, 30, limit=random.randint(5, 40),
                                      older_than=1.0, clock=clock)
            if not batch:
                return got
            got += [mid for mid, _ in batch]

    got_a, got_b = await asyncio.gather(sweep(a), sweep(b))
    assert not set(got_a) & set(got_b)
    assert sorted(got_a + got_b) == ids
    leases = await _leases(a)
    assert all(leases[m][0] == a.name for m in got_a)
    assert all(leases[m][0] == b.name for m in got_b)
    assert {attempts for _, attempts, _ in leases.values()} == {1}


async def test_an_expired_lease_passes_to_the_other_node(nodes: tuple[Node, Node],
                                                         clock: ManualClock) -> None:
    a, b = nodes
    [mid] = await insert_messages(a, 1, clock)
    assert await claim_message(a.writer, mid, a.name, lease=30, clock=clock) == 1
    await clock.advance(29)
    # A's lease is live for one more second.
    assert await claim_message(b.writer, mid, b.name, lease=30, clock=clock) is None
    assert await claim_batch(b.writer, b.name, 30, 10, older_than=0, clock=clock) == []
    await clock.advance(2)  # A stalls: its lease runs out
    assert await claim_batch(b.writer, b.name, 30, 10, older_than=0, clock=clock) == [(mid, 2)]
    assert await renew_lease(a.writer, mid, a.name, 30, clock) is False  # A learns it lost it
    await release_lease(a.writer, mid, a.name, retry_in=0, clock=clock)  # nor release B's
    assert (await _leases(a))[mid] == (b.name, 2, PROCESSING)
    assert await renew_lease(b.writer, mid, b.name, 30, clock) is True
    await clock.advance(29)  # renewed: B's lease runs 30 s from the renewal, not the claim
    assert await claim_batch(a.writer, a.name, 30, 10, older_than=0, clock=clock) == []


async def test_a_stopping_node_gives_back_only_its_own_unfinished_leases(
        nodes: tuple[Node, Node], clock: ManualClock) -> None:
    a, b = nodes
    ids = await insert_messages(a, 6, clock)
    await claim_batch(a.writer, a.name, 30, limit=3, older_than=1.0, clock=clock)
    await claim_batch(b.writer, b.name, 30, limit=3, older_than=1.0, clock=clock)
    async with a.engine.begin() as conn:  # one of A's is finished already
        await conn.execute(update(MESSAGES).where(MESSAGES.c.id == ids[0])
                           .values(status=READY, lease_owner=a.name))
    assert await release_node_leases(a.writer, a.name) == 2
    leases = await _leases(a)
    assert leases[ids[1]][0] is None and leases[ids[2]][0] is None
    assert all(leases[i][0] == b.name for i in ids[3:])
    assert await claim_batch(b.writer, b.name, 30, 10, older_than=1.0, clock=clock) == [
        (ids[1], 2), (ids[2], 2)]


async def test_an_outage_costs_no_attempt_until_the_retry_window_closes(
        nodes: tuple[Node, Node], clock: ManualClock) -> None:
    a, b = nodes
    (young,) = await insert_messages(a, 1, clock, age=40.0)
    assert await claim_message(a.writer, young, a.name, 30, clock) == 1
    # Not ours: nothing changes, and nobody is told to fail it.
    assert await defer_after_transient(b.writer, young, b.name, retry_for=3600,
                                       clock=clock) is True
    assert (await _leases(a))[young] == (a.name, 1, PROCESSING)
    assert await defer_after_transient(a.writer, young, a.name, retry_for=3600,
                                       clock=clock) is True
    leases = await _leases(a)
    assert leases[young][:2] == (None, 0)  # given back, the attempt refunded
    # It waits a quarter of its age (40 s → 10 s) before anyone may claim it again.
    async with a.engine.connect() as conn:
        until = (await conn.execute(select(MESSAGES.c.lease_expires_at))).scalar_one()
    if until.tzinfo is None:
        until = until.replace(tzinfo=clock.now().tzinfo)
    assert (until - clock.now()).total_seconds() == pytest.approx(10.0, abs=0.001)
    await clock.advance(9.5)
    assert await claim_batch(b.writer, b.name, 30, 10, older_than=0.0, clock=clock) == []
    assert await claim_message(a.writer, young, a.name, 30, clock) is None  # still paused
    await clock.advance(1)
    assert await claim_message(a.writer, young, a.name, 30, clock) == 1
    # Past the window the caller is told to fail it, and the row is left to the caller.
    assert await defer_after_transient(a.writer, young, a.name, retry_for=50,
                                       clock=clock) is False  # received 50.5 s ago
    assert (await _leases(a))[young] == (a.name, 1, PROCESSING)


async def test_the_event_cursor_never_skips_a_late_commit(nodes: tuple[Node, Node]) -> None:
    """Writers on two nodes commit events while a reader follows `seq > cursor`: the reader
    must end up with every event. Without the commit-order lock, PostgreSQL hands out a seq at
    insert and a transaction holding a low seq can commit after a reader moved past it."""
    a, b = nodes
    total = 240

    def writer_of(n: int) -> object:
        def write(conn: Connection) -> None:
            record_events(conn, event_rows(["agt_x"], "message.received", f"m{n}", utcnow()))
            time.sleep(random.random() * 0.004)  # hold the transaction a moment
        return write

    async def produce(node: Node, numbers: range) -> None:
        for start in range(0, len(numbers), 8):
            await asyncio.gather(*(node.writer.write(writer_of(n))  # type: ignore[arg-type]
                                   for n in numbers[start:start + 8]))

    seen: list[int] = []
    done = asyncio.Event()

    async def follow() -> None:
        cursor = 0
        async with a.engine.connect() as conn:
            while True:
                finished = done.is_set()
                rows = (await conn.execute(select(EVENTS.c.seq, EVENTS.c.message_id)
                                           .where(EVENTS.c.seq > cursor)
                                           .order_by(EVENTS.c.seq))).all()
                await conn.commit()  # a fresh snapshot next time
                for seq, _ in rows:
                    seen.append(int(seq))
                    cursor = int(seq)
                if finished:
                    return
                await asyncio.sleep(0)

    reader = asyncio.create_task(follow())
    await asyncio.gather(produce(a, range(0, total, 2)), produce(b, range(1, total, 2)))
    done.set()
    await reader
    async with a.engine.connect() as conn:
        stored = [int(r[0]) for r in (await conn.execute(select(EVENTS.c.seq))).all()]
    assert len(stored) == total
    assert sorted(seen) == sorted(stored), f"the reader missed {set(stored) - set(seen)}"


async def test_postgresql_batches_take_the_commit_order_lock(pg: PgServer) -> None:
    node = Node(pg.new_database(), "n")
    try:
        def held(conn: Connection) -> int:
            rows = conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"))
            return int(rows.scalar() or 0)
        assert await node.writer.write(held) == 1
    finally:
        await node.close()
