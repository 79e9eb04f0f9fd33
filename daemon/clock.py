"""The time the pipeline reads: one object, so tests can drive it instead of waiting on it.

`monotonic()` paces and measures (backpressure, lease renewal), `now()` is what rows store and
leases compare (aware UTC), `sleep()` is how a loop waits for its next turn. The daemon uses
`SYSTEM`; tests pass a clock they advance by hand. Nothing here may read the environment.
`iso()` is how every time leaves postroom (the API, webhooks).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import overload


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


@overload
def iso(when: datetime | float) -> str: ...
@overload
def iso(when: None) -> None: ...
@overload
def iso(when: datetime | float | None) -> str | None: ...


def iso(when: datetime | float | None) -> str | None:
    """The one timestamp format of the API: RFC 3339 in UTC with milliseconds and a Z
    (`2026-12-02T17:00:00.123Z`). `when` is a datetime (naive ones are UTC, as stored) or
    POSIX seconds; None stays None."""
    if when is None:
        return None
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.isoformat(timespec="milliseconds") + "Z"
