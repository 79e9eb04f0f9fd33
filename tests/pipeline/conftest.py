"""Fixtures of the tests of what nodes share: a database (a SQLite file, or a fresh one on the
machine's PostgreSQL), two nodes on it, and the clock they read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.db import make_engine, upgrade_schema
from tests.clock import ManualClock
from tests.pipeline.nodes import Node


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg").new_database()
        return url
    url = f"sqlite+aiosqlite:///{tmp_path}/leases.db"
    engine = make_engine(url)
    await upgrade_schema(engine)
    await engine.dispose()
    return url


@pytest.fixture
async def nodes(db_url: str) -> AsyncIterator[tuple[Node, Node]]:
    a, b = Node(db_url, "node-a"), Node(db_url, "node-b")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
