"""A clock for tests that moves only when the test moves it: `ManualClock`.

What the pipeline reads through `daemon.clock.Clock` (pacing, lags, lease times, its loops'
sleeps) then stands still while a test sets up a situation, and `await clock.advance(s)` makes
`s` seconds pass at once, waking each sleeper at its own moment in turn. Nothing here sleeps
for real: a test that drives this clock takes no longer on a busy machine than on an idle one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from daemon.clock import Clock

# Loop turns `advance` lets run after waking sleepers: each hop of a wake-up (a future's
# callback, the task it resumes, the next task that one wakes) takes one turn, and no chain in
# the tests is longer than a handful. Turns of the event loop, not time: this is deterministic.
SETTLE_TURNS = 20


class ManualClock(Clock):
    """Time that passes only in `advance`; `now()` starts at `start` (the real now by default)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime.now(UTC)
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._elapsed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken = asyncio.get_running_loop().create_future()
        entry = (self._elapsed + seconds, woken)
        self._sleepers.append(entry)
        try:
            await woken
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock now."""
        return sum(1 for _, woken in self._sleepers if not woken.done())

    async def advance(self, seconds: float) -> None:
        """Let `seconds` pass: each sleeper due on the way wakes at its own moment (the clock
        reads that moment meanwhile), and what it sets off runs before time moves on."""
        target = self._elapsed + seconds
        await settle()
        while True:
            due = [when for when, woken in self._sleepers if not woken.done() and when <= target]
            if not due:
                break
            self._elapsed = max(self._elapsed, min(due))
            for when, woken in list(self._sleepers):
                if when <= self._elapsed and not woken.done():
                    woken.set_result(None)
            await settle()
        self._elapsed = target
        await settle()


async def settle() -> None:
    """Let every task that can run without time passing run (a fixed number of loop turns)."""
    for _ in range(SETTLE_TURNS):
        await asyncio.sleep(0)
