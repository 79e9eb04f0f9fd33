"""Reading DATA: the bytes after 354 up to the end marker, unstuffed, into the spool, under the
size limit and a time budget. It replaces aiosmtpd's reader, which takes a line at a time,
refuses long lines and holds the whole message in memory.

Per chunk it does only what it must (framing, the budget, the spool write); it never holds the
message whole, never writes to the client and never decides a reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

import structlog

from daemon.smtp import policy, streams
from daemon.smtp.framing import Unstuffer
from storage.spool import Spool

log = structlog.get_logger("postroom.smtp")

CHUNK = 1 << 17  # how much DATA we take from the reader at a time

# "ok": the whole message is in the spool; "too_big": past the limit (552); "failed": the spool
# could not take it (451). In the last two the spool is discarded and the rest was read away.
DataOutcome = Literal["ok", "too_big", "failed"]


class TimeBudget:
    """How long the next DATA read may wait: a slow client is cut off, a moving one is not.

    The budget starts at `timeout`, is spent by the time between reads and earns back one
    second per `rate` bytes received, never above `timeout`. So a gap as long as the timeout
    cuts the client off, as does a trickle: a byte a second runs the budget out in about
    `timeout`, where an idle timer reset on every chunk would let it hold its slot for ever. A
    burst cannot bank time for a trickle later. (Postfix's smtpd_min_data_rate works this way.)
    `clock` gives seconds (the event loop's time, or a test's).
    """

    def __init__(self, timeout: float, clock: Callable[[], float],
                 rate: float = policy.MIN_DATA_RATE) -> None:
        self._timeout = timeout
        self._clock = clock
        self._rate = rate
        self._left = timeout
        self._last = clock()

    def spend(self, received: int) -> float:
        """Charge the time since the last call, credit `received` bytes; the seconds the next
        read may wait (a spent budget gives a millisecond: the timer fires at once)."""
        now = self._clock()
        self._left = min(self._timeout, self._left - (now - self._last) + received / self._rate)
        self._last = now
        return max(self._left, 0.001)


async def read_message(reader: asyncio.StreamReader, spool: Spool, limit: int,
                       budget: TimeBudget, arm_timer: Callable[[float], None]
                       ) -> tuple[DataOutcome, int]:
    """Read DATA up to the end marker into `spool`: (outcome, size).

    Each chunk is unstuffed and handed on, keeping back only a tail that may hold the start of
    the end marker or of a stuffed line; bytes after the end marker (pipelined commands) go
    back to `reader`. `size` counts unstuffed bytes; past `limit` (or after a spool error) the
    rest is read and dropped, so the connection stays in step with the client. After each
    chunk `arm_timer` gets the seconds the next read may wait (`budget`); the caller's timer
    closes the connection when they run out. Raises ConnectionResetError at end of stream.
    """
    saved_limit = streams.widen(reader, CHUNK)
    framing = Unstuffer()
    size = 0
    outcome: DataOutcome = "ok"
    try:
        while True:
            chunk = await reader.read(CHUNK)
            if not chunk:
                raise ConnectionResetError("connection closed during DATA")
            arm_timer(budget.spend(len(chunk)))
            out = framing.feed(chunk)
            if framing.done and framing.leftover:
                streams.unread(reader, framing.leftover)
            size += len(out)
            if outcome == "ok" and size > limit:
                outcome = "too_big"
                spool.discard()
            if outcome == "ok" and out:
                try:
                    await spool.write(out)
                except OSError as e:
                    log.warning("smtp.spool_failed", error=e.strerror or str(e))
                    outcome = "failed"
                    spool.discard()
            if framing.done:
                return outcome, size
    finally:
        streams.restore(reader, saved_limit)
