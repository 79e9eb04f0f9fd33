"""Which agent an API key belongs to, remembered briefly so most requests skip the database.

A key the database confirmed is kept for at most `ttl` seconds (≤ 2 s, so a key the CLI, in
another process, removes or rotates away stops working within SPEC §7's 5 s), and at most
`size` keys are kept, oldest confirmation dropped first. Unknown keys are never remembered:
guessing can neither grow the cache nor push real agents out. Only SHA-256 hashes are held.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from daemon.ids import hash_api_key

MAX_TTL = 2.0


class KeyCache:
    """API key → agent id through `lookup` (key hash → agent id or None), with a bounded,
    short-lived memory of the answers that named an agent."""

    def __init__(self, lookup: Callable[[str], Awaitable[str | None]], ttl: float = MAX_TTL,
                 size: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= ttl <= MAX_TTL:
            raise ValueError(f"key cache ttl must be within 0..{MAX_TTL} s")
        if size < 1:
            raise ValueError("key cache size must be at least 1")
        self._lookup = lookup
        self.ttl, self.size = ttl, size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def agent_id(self, key: str) -> str | None:
        """The id of the agent whose key this is, None if no agent has it."""
        key_hash = hash_api_key(key)
        entry = self._entries.get(key_hash)
        if entry is not None:
            if self._clock() < entry[1]:
                return entry[0]
            del self._entries[key_hash]
        agent_id = await self._lookup(key_hash)
        if agent_id is not None and self.ttl > 0:
            # A fresh confirmation goes to the young end: eviction drops the oldest first.
            self._entries.pop(key_hash, None)
            self._entries[key_hash] = (agent_id, self._clock() + self.ttl)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return agent_id
