"""Backpressure (`pipeline.max_lag`): SMTP waits at MAIL while the oldest unfinished
message has waited too long, or what the node holds and is receiving would take too long to
drain, boundedly, and goes on as soon as the queue catches up.

The pipeline here has its queue and its workers, with `process` replaced by a job of a known
length; nothing else of it (database, store, extraction) is touched by what is tested. Time is
a `ManualClock`: it stands still until the test advances it, so what a test asserts is which
transactions went, in what order, at which moment of that clock, never how long it really took.
Durations are binary fractions (0.25, 0.0625 …) so that sums of them are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from daemon.pipeline.jobs import Pipeline, PipelineSettings
from extractors import Limits
from tests.clock import ManualClock, settle


@dataclass
class Setup:
    clock: ManualClock
    pipeline: Pipeline
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@pytest.fixture
async def setup() -> AsyncIterator[Callable[..., Setup]]:
    """Makes the pipeline of a test (`max_lag`, `incoming` transactions in DATA: a number, or
    what tells it) on a clock of its own; cancels its workers and transactions afterwards."""
    made: list[Setup] = []

    def make(max_lag: float, incoming: int | Callable[[], int] = 0) -> Setup:
        settings = PipelineSettings(workers=1, queue_size=100, lease=60, sweep_interval=60,
                                    max_attempts=5, limits=Limits(1 << 20, 10, 4),
                                    max_lag=max_lag)
        none: Any = None
        count = incoming if callable(incoming) else (lambda: incoming)
        clock = ManualClock()
        made.append(Setup(clock, Pipeline(settings, none, none, none, none, "node", none, none,
                                          incoming=count, clock=clock)))
        return made[-1]

    yield make
    tasks = [t for s in made for t in s.tasks]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _transactions(s: Setup, count: int) -> list[tuple[int, float]]:
    """`count` transactions arriving at MAIL now; the list fills with (which, the clock's
    reading when it went on), in the order they went."""
    released: list[tuple[int, float]] = []

    async def transaction(n: int) -> None:
        await s.pipeline.caught_up()
        released.append((n, s.clock.monotonic()))

    s.tasks += [asyncio.create_task(transaction(n)) for n in range(count)]
    await settle()
    return released


async def _goes_at_once(s: Setup) -> bool:
    """Whether a transaction arriving at MAIL now goes on without the clock moving."""
    released = await _transactions(s, 1)
    return bool(released)


def _start_worker(s: Setup, job_seconds: float) -> None:
    async def process(message_id: str, claimed: Any = None) -> None:
        await s.clock.sleep(job_seconds)  # a job of known length on the test's clock

    s.pipeline.process = process  # type: ignore[method-assign]
    s.tasks.append(asyncio.create_task(s.pipeline._worker()))


async def test_no_backlog_no_wait(setup: Callable[..., Setup]) -> None:
    s = setup(0.25)
    assert s.pipeline.lag() == 0.0
    assert await _goes_at_once(s)
    s.pipeline.submit("m1")  # fresh: well within the lag allowed
    await s.clock.advance(0.125)
    assert await _goes_at_once(s)


async def test_a_stalled_queue_delays_mail_by_the_bound_and_no_more(
        setup: Callable[..., Setup]) -> None:
    s = setup(0.25)
    s.pipeline.submit("m1")
    await s.clock.advance(0.5)  # the queued message grows older than max_lag
    assert s.pipeline.lag() == 0.5
    released = await _transactions(s, 1)
    await s.clock.advance(0.5)
    assert released == []  # nothing finishes: it waits …
    await s.clock.advance(0.25)
    assert released == [(0, 0.5 + 3 * 0.25)]  # … 3 × max_lag, then goes on
    assert not s.pipeline.backpressure.waiting  # one that gave up waiting leaves nothing behind


async def test_mail_goes_on_as_soon_as_the_workers_catch_up(setup: Callable[..., Setup]) -> None:
    s = setup(0.5)
    for n in range(3):
        s.pipeline.submit(f"m{n}")
    await s.clock.advance(0.75)
    assert s.pipeline.lag() > 0.5
    released = await _transactions(s, 1)
    assert released == []
    _start_worker(s, job_seconds=0.0625)
    await s.clock.advance(0.0625)
    assert released == [(0, 0.8125)]  # at the first message finished, not the 1.5 s bound


async def test_max_lag_zero_turns_it_off(setup: Callable[..., Setup]) -> None:
    s = setup(0.0)
    s.pipeline.submit("m1")
    await s.clock.advance(60)
    assert await _goes_at_once(s)


async def test_waiting_transactions_go_one_per_message_finished(
        setup: Callable[..., Setup]) -> None:
    """Paced, not stop-and-go: each message a worker finishes lets one waiting transaction go,
    in the order they came."""
    s = setup(0.25)
    for n in range(6):
        s.pipeline.submit(f"m{n}")
    await s.clock.advance(0.375)
    released = await _transactions(s, 3)
    assert released == []  # nothing finished yet: all three wait
    # Jobs of 1/32 s: what is left stays under max_lag to drain, so only the lag holds MAIL.
    _start_worker(s, job_seconds=0.03125)
    await s.clock.advance(0.03125)
    assert released == [(0, 0.40625)]
    await s.clock.advance(0.03125)
    assert released == [(0, 0.40625), (1, 0.4375)]
    await s.clock.advance(0.03125)
    assert released == [(0, 0.40625), (1, 0.4375), (2, 0.46875)]  # well before the bound


async def _learn_pace(s: Setup, job_seconds: float) -> None:
    """Run four back-to-back messages through, so the pipeline knows its pace."""
    _start_worker(s, job_seconds)
    for n in range(4):
        s.pipeline.submit(f"pace{n}")
    await s.clock.advance(4 * job_seconds)
    assert not s.pipeline.backpressure.since  # all four finished


async def test_transactions_in_data_count_towards_the_drain_time(
        setup: Callable[..., Setup]) -> None:
    """Sixteen large messages in DATA are not queued yet, but will be: at 1/16 s each they are
    1 s of extraction, so a new MAIL waits although the queue itself is fresh."""
    s = setup(0.25, incoming=16)
    await _learn_pace(s, job_seconds=0.0625)
    assert s.pipeline.backpressure.interval == pytest.approx(0.0625)
    assert s.pipeline.lag() == 0.0
    assert s.pipeline.drain_time() == pytest.approx(16 * 0.0625)
    started = s.clock.monotonic()
    released = await _transactions(s, 1)
    await s.clock.advance(0.5)
    assert released == []  # nothing finishes meanwhile …
    await s.clock.advance(0.25)
    assert released == [(0, started + 0.75)]  # … so it waits the bound, 3 × max_lag


async def test_few_transactions_in_data_do_not_hold_mail_back(
        setup: Callable[..., Setup]) -> None:
    s = setup(0.25, incoming=2)
    await _learn_pace(s, job_seconds=0.0625)
    assert s.pipeline.drain_time() < 0.25
    assert await _goes_at_once(s)


async def test_the_pace_is_learnt_only_from_a_backlog(setup: Callable[..., Setup]) -> None:
    """Messages that arrive one at a time, with the workers idle in between, say nothing of how
    fast a backlog drains: the gaps between them are the senders' pace, not ours."""
    s = setup(0.25, incoming=16)
    _start_worker(s, job_seconds=0.0625)
    for n in range(3):
        s.pipeline.submit(f"m{n}")
        await s.clock.advance(0.25)
        assert not s.pipeline.backpressure.since  # finished before the next one came
    assert s.pipeline.backpressure.interval == 0.0
    assert await _goes_at_once(s)


async def test_while_the_drain_time_is_over_the_bound_a_finish_lets_nobody_go(
        setup: Callable[..., Setup]) -> None:
    """Letting one MAIL go per message finished would keep sixteen large messages in DATA for
    ever; so while what is held and arriving is over the bound, finishing one lets none go,
    and once it is back under, the waiting transactions go at the next finishes."""
    arriving = [16]
    s = setup(0.25, incoming=lambda: arriving[0])
    await _learn_pace(s, job_seconds=0.0625)
    started = s.clock.monotonic()
    released = await _transactions(s, 2)
    for n in range(12):
        s.pipeline.submit(f"m{n}")
    await s.clock.advance(8 * 0.0625)
    assert released == []  # eight finished, none let a transaction go
    assert len(s.pipeline.backpressure.since) == 4
    arriving[0] = 0  # the transactions in DATA are done: four queued, a quarter of a second
    # Both let go at a finish, before their bound (0.75 after they came).
    await s.clock.advance(0.0625)  # the ninth finish: the lag is over, so one goes
    assert released == [(0, started + 9 * 0.0625)]
    await s.clock.advance(0.0625)
    assert released == [(0, started + 9 * 0.0625), (1, started + 10 * 0.0625)]
