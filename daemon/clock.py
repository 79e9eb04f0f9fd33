"""The time the pipeline reads: one object, so tests can drive it instead of waiting on it.

`monotonic()` paces and measures (backpressure, lease renewal), `now()` is what rows store and
leases compare (aware UTC), `sleep()` is how a loop waits for its next turn. The daemon uses
`SYSTEM`; tests pass a clock they advance by hand. Nothing here may read the environment.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


class Clock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        """Aware UTC now: how every timestamp is stored and compared."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM = Clock()
