"""The API key cache: confirmed keys for at most 2 s, a bounded number of them, never a miss."""

from __future__ import annotations

import pytest

from daemon.api.keycache import MAX_TTL, KeyCache
from daemon.ids import hash_api_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Directory:
    """A stand-in for the database: key hash → agent id, counting the lookups."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.by_hash = {hash_api_key(k): agent for k, agent in keys.items()}
        self.lookups = 0

    async def __call__(self, key_hash: str) -> str | None:
        self.lookups += 1
        return self.by_hash.get(key_hash)


async def test_a_confirmed_key_is_answered_from_memory_until_the_ttl_passes() -> None:
    clock, db = Clock(), Directory({"pr_a": "agt_a"})
    cache = KeyCache(db, ttl=2.0, clock=clock)
    assert await cache.agent_id("pr_a") == "agt_a"
    clock.now += 1.9
    assert await cache.agent_id("pr_a") == "agt_a"
    assert db.lookups == 1
    clock.now += 0.1  # 2.0 s after the confirmation: asked again
    assert await cache.agent_id("pr_a") == "agt_a"
    assert db.lookups == 2


async def test_a_removed_key_stops_working_once_the_ttl_passes() -> None:
    clock, db = Clock(), Directory({"pr_a": "agt_a"})
    cache = KeyCache(db, ttl=2.0, clock=clock)
    assert await cache.agent_id("pr_a") == "agt_a"
    db.by_hash.clear()  # `postroom agent remove` in another process
    assert await cache.agent_id("pr_a") == "agt_a"
    clock.now += 2.0
    assert await cache.agent_id("pr_a") is None
    assert len(cache) == 0


async def test_unknown_keys_are_never_remembered() -> None:
    clock, db = Clock(), Directory({"pr_a": "agt_a"})
    cache = KeyCache(db, size=4, clock=clock)
    assert await cache.agent_id("pr_a") == "agt_a"
    for i in range(1000):
        assert await cache.agent_id(f"pr_guess_{i}") is None
    assert await cache.agent_id("pr_guess_0") is None
    assert len(cache) == 1
    assert db.lookups == 1 + 1001
    assert await cache.agent_id("pr_a") == "agt_a"  # still answered from memory
    assert db.lookups == 1 + 1001


async def test_the_cache_holds_at_most_size_keys_dropping_the_oldest() -> None:
    clock = Clock()
    db = Directory({f"pr_{i}": f"agt_{i}" for i in range(10)})
    cache = KeyCache(db, size=3, clock=clock)
    for i in range(10):
        assert await cache.agent_id(f"pr_{i}") == f"agt_{i}"
        clock.now += 0.01
    assert len(cache) == 3
    asked = db.lookups
    for i in (7, 8, 9):
        assert await cache.agent_id(f"pr_{i}") == f"agt_{i}"
    assert db.lookups == asked
    assert await cache.agent_id("pr_0") == "agt_0"  # evicted: asked again
    assert db.lookups == asked + 1 and len(cache) == 3


async def test_keys_are_held_only_as_hashes() -> None:
    cache = KeyCache(Directory({"pr_secret": "agt_a"}))
    await cache.agent_id("pr_secret")
    assert "pr_secret" not in repr(vars(cache))


async def test_a_zero_ttl_asks_the_database_every_time() -> None:
    db = Directory({"pr_a": "agt_a"})
    cache = KeyCache(db, ttl=0)
    for _ in range(3):
        assert await cache.agent_id("pr_a") == "agt_a"
    assert db.lookups == 3 and len(cache) == 0


@pytest.mark.parametrize(("ttl", "size"), [(MAX_TTL + 0.1, 10), (-1, 10), (1.0, 0)])
def test_a_ttl_beyond_2_s_or_an_empty_cache_is_refused(ttl: float, size: int) -> None:
    with pytest.raises(ValueError):
        KeyCache(Directory({}), ttl=ttl, size=size)
