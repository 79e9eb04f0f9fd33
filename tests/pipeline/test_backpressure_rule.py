"""Backpressure (`pipeline.max_lag`): SMTP waits at MAIL while the oldest unfinished
message has waited too long, or what the node holds and is receiving would take too long to
drain, boundedly, and goes on as soon as the queue catches up.

The pipeline here has its queue and its workers, with `process` replaced by a job of a known
length; nothing else of it (database, store, extraction) is touched by what is tested.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from daemon.pipeline.jobs import Pipeline, PipelineSettings
from extractors import Limits


def _pipeline(max_lag: float, incoming: int | Callable[[], int] = 0) -> Pipeline:
    """A pipeline with `incoming` transactions in DATA (a number, or what tells it)."""
    settings = PipelineSettings(workers=1, queue_size=100, lease=60, sweep_interval=60,
                                max_attempts=5, limits=Limits(1 << 20, 10, 4), max_lag=max_lag)
    none: Any = None
    count = incoming if callable(incoming) else (lambda: incoming)
    return Pipeline(settings, none, none, none, none, "node", none, none, incoming=count)


def _transactions(p: Pipeline, count: int) -> tuple[list[float], list[asyncio.Task[None]]]:
    """`count` transactions waiting at MAIL; each adds when it went on (s from now) to the list."""
    started = time.monotonic()
    released: list[float] = []

    async def transaction() -> None:
        await p.caught_up()
        released.append(time.monotonic() - started)

    return released, [asyncio.create_task(transaction()) for _ in range(count)]


@pytest.fixture
async def worker() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _start_worker(p: Pipeline, tasks: list[asyncio.Task[None]], job_seconds: float) -> None:
    async def process(message_id: str, claimed: Any = None) -> None:
        await asyncio.sleep(job_seconds)  # a job of known length (the thing under test waits)

    p.process = process  # type: ignore[method-assign]
    tasks.append(asyncio.create_task(p._worker()))


async def _timed(p: Pipeline) -> float:
    started = time.monotonic()
    await p.caught_up()
    return time.monotonic() - started


async def test_no_backlog_no_wait() -> None:
    p = _pipeline(0.2)
    assert p.lag() == 0.0
    assert await _timed(p) < 0.05
    p.submit("m1")  # fresh: well within the lag allowed
    assert await _timed(p) < 0.05


async def test_a_stalled_queue_delays_mail_by_the_bound_and_no_more() -> None:
    p = _pipeline(0.1)
    p.submit("m1")
    await asyncio.sleep(0.15)  # let the queued message grow older than max_lag
    assert p.lag() > 0.1
    waited = await _timed(p)
    assert 0.25 <= waited < 0.6, waited  # 3 × max_lag, then the transaction goes on
    assert not p._waiting  # a transaction that gave up waiting leaves nothing behind


async def test_mail_goes_on_as_soon_as_the_workers_catch_up(
        worker: list[asyncio.Task[None]]) -> None:
    p = _pipeline(0.5)
    for n in range(3):
        p.submit(f"m{n}")
    await asyncio.sleep(0.55)
    assert p.lag() > 0.5
    _start_worker(p, worker, job_seconds=0.01)  # drains the three in about 30 ms
    waited = await _timed(p)
    assert waited < 0.3, waited  # at the first message finished, well before the 1.5 s bound


async def test_max_lag_zero_turns_it_off() -> None:
    p = _pipeline(0.0)
    p.submit("m1")
    await asyncio.sleep(0.05)
    assert await _timed(p) < 0.02


async def test_waiting_transactions_go_one_per_message_finished(
        worker: list[asyncio.Task[None]]) -> None:
    """Paced, not stop-and-go: each message a worker finishes lets one waiting transaction go."""
    p = _pipeline(0.3)
    for n in range(6):
        p.submit(f"m{n}")
    await asyncio.sleep(0.35)
    released, waiters = _transactions(p, 3)
    await asyncio.sleep(0.05)
    assert released == []  # nothing finished yet: all three wait
    _start_worker(p, worker, job_seconds=0.1)  # finishes one message every 0.1 s
    await asyncio.gather(*waiters)
    assert len(released) == 3
    assert released[2] - released[0] >= 0.15, released  # let go one by one, 0.1 s apart
    assert released[2] < 0.9, released  # each well before its 0.9 s bound


async def _learn_pace(p: Pipeline, tasks: list[asyncio.Task[None]], job_seconds: float) -> None:
    """Run four back-to-back messages through, so the pipeline knows its pace."""
    _start_worker(p, tasks, job_seconds)
    for n in range(4):
        p.submit(f"pace{n}")
    await _drained(p)


async def _drained(p: Pipeline) -> None:
    for _ in range(1000):
        if not p._since:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the pipeline never drained")


async def test_transactions_in_data_count_towards_the_drain_time(
        worker: list[asyncio.Task[None]]) -> None:
    """Sixteen large messages in DATA are not queued yet, but will be: at 50 ms each they are
    0.8 s of extraction, so a new MAIL waits although the queue itself is fresh."""
    p = _pipeline(0.3, incoming=16)
    await _learn_pace(p, worker, job_seconds=0.05)
    assert 0.04 <= p._interval <= 0.1, p._interval
    assert p.lag() == 0.0
    assert p.drain_time() == pytest.approx(16 * p._interval)
    assert await _timed(p) >= 0.25  # nothing finishes meanwhile: the 0.9 s bound, or close


async def test_few_transactions_in_data_do_not_hold_mail_back(
        worker: list[asyncio.Task[None]]) -> None:
    p = _pipeline(0.3, incoming=2)
    await _learn_pace(p, worker, job_seconds=0.05)
    assert p.drain_time() < 0.3
    assert await _timed(p) < 0.05


async def test_the_pace_is_learnt_only_from_a_backlog(worker: list[asyncio.Task[None]]) -> None:
    """Messages that arrive one at a time, with the workers idle in between, say nothing of how
    fast a backlog drains: the gaps between them are the senders' pace, not ours."""
    p = _pipeline(0.3, incoming=16)
    _start_worker(p, worker, job_seconds=0.01)
    for n in range(3):
        p.submit(f"m{n}")
        await asyncio.sleep(0.2)
    assert p._interval == 0.0
    assert await _timed(p) < 0.05


async def test_while_the_drain_time_is_over_the_bound_a_finish_lets_nobody_go(
        worker: list[asyncio.Task[None]]) -> None:
    """Letting one MAIL go per message finished would keep sixteen large messages in DATA for
    ever; so while what is held and arriving is over the bound, finishing one lets none go,
    and once it is back under, the waiting transactions go at the next finish."""
    arriving = [16]
    p = _pipeline(0.3, incoming=lambda: arriving[0])
    await _learn_pace(p, worker, job_seconds=0.05)
    released, waiters = _transactions(p, 2)
    for n in range(12):  # a message finished every 50 ms meanwhile
        p.submit(f"m{n}")
    await asyncio.sleep(0.4)
    assert released == []  # eight finished, none let a transaction go
    arriving[0] = 1  # the transactions in DATA are done: drain 50 ms + the queue's
    await _drained(p)
    await asyncio.gather(*waiters)
    assert all(0.4 <= r < 0.9 for r in released), released  # at a finish, before the bound
