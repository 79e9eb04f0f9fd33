"""Backpressure: SMTP's next transaction waits while extraction on this node is behind.

`max_lag` bounds the pressure: the age of the oldest unfinished message (queued, or with a
worker that may itself wait for the extraction process), or the time the node would take to
make ready what it holds and what is still arriving, when that is longer. It delays a MAIL,
never refuses one; the time it reads is the pipeline's clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable

from daemon.clock import SYSTEM, Clock


class Backpressure:
    """The pace of one node's pipeline, and the transactions waiting for it."""

    def __init__(self, max_lag: float, incoming: Callable[[], int] = lambda: 0,
                 clock: Clock = SYSTEM) -> None:
        self.max_lag = max_lag
        # Transactions of this node between their DATA and its reply: on their way in.
        self._incoming = incoming
        self._clock = clock
        # Seconds between two messages finished while the queue was never empty in between:
        # a moving average, what one more message adds to the time the backlog takes to drain.
        self.interval = 0.0
        self._last_finish: float | None = None
        self._backlogged = False  # whether messages were left unfinished at the last finish
        # When each of this node's unfinished messages (queued or being extracted) joined the
        # queue, oldest first (the queue is FIFO).
        self.since: dict[str, float] = {}
        # Transactions held back by `caught_up`, one let go each time a worker finishes one.
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def joined(self, message_id: str) -> None:
        """`message_id` is on its way to `ready` on this node (from now, unless already)."""
        self.since.setdefault(message_id, self._clock.monotonic())

    def lag(self) -> float:
        """Seconds the oldest of this node's unfinished messages (queued, or with a worker that
        may itself wait for the extraction process) has been on its way to `ready`."""
        oldest = next(iter(self.since.values()), None)
        return 0.0 if oldest is None else self._clock.monotonic() - oldest

    def drain_time(self) -> float:
        """Seconds the node would take to make ready what it holds now: its unfinished messages
        and those still arriving (in DATA), at the pace messages have been finishing."""
        return (len(self.since) + self._incoming()) * self.interval

    def pressure(self) -> float:
        """What `max_lag` bounds: the lag, or the drain time when that is longer.

        The lag alone let large messages pile up: sixteen transactions in DATA are not in
        the queue yet, and when a load ends they all arrive at once, each costing the
        extraction process a tenth of a second."""
        return max(self.lag(), self.drain_time())

    def finished(self, message_id: str) -> None:
        """`message_id` is done: the pace is sampled (only when a backlog lasted since the last
        finish), and waiting transactions may go."""
        now = self._clock.monotonic()
        if self._last_finish is not None and self._backlogged:
            gap = now - self._last_finish
            self.interval = gap if self.interval == 0.0 else 0.8 * self.interval + 0.2 * gap
        self._last_finish = now
        self.since.pop(message_id, None)
        self._backlogged = bool(self.since)
        self._let_one_go()

    async def caught_up(self) -> None:
        """Return at once while the pressure (the lag, or the drain time when longer) is within
        `max_lag`; beyond it, when a worker finishes a message (one waiter per message
        finished, so acceptance follows the pace of extraction instead of stopping and
        starting; none while the drain time is over), or after 3 × `max_lag` (30 s at most).

        Under a load extraction cannot keep up with, the backlog stays bounded; a stalled
        pipeline (the store away) delays each transaction by the bound, never refuses one."""
        limit = self.max_lag
        if limit <= 0 or self.pressure() <= limit:
            return
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        # The bound is a sleep on the clock (not wait_for's timer), so a test's clock drives it.
        bound = asyncio.ensure_future(self._clock.sleep(min(3 * limit, 30.0)))
        try:
            await asyncio.wait((turn, bound), return_when=asyncio.FIRST_COMPLETED)
        finally:
            bound.cancel()
            if not turn.done():
                turn.cancel()
                # Not left behind: a long stall would otherwise keep one entry per MAIL.
                with contextlib.suppress(ValueError):
                    self.waiting.remove(turn)

    def _let_one_go(self) -> None:
        """A worker finished a message: the next waiting transaction may go (all of them, once
        the pressure is back within bounds). While the drain time is over the bound, none goes:
        letting one go per message finished would keep as many in DATA as there were."""
        limit = self.max_lag
        if self.drain_time() > limit:
            return
        caught_up = self.lag() <= limit
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                if not caught_up:
                    return
