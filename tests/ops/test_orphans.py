"""Listing a store page by page (both backends) and removing objects no message row points at."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.agents import utcnow
from daemon.ids import new_message_id
from daemon.ops.orphans import remove_orphans
from storage.db import make_engine, make_sessions, upgrade_schema
from storage.local import LocalStore
from storage.models import Message
from storage.objects import ObjectStore, attachment_key, body_key, raw_key
from storage.presign import UrlSigner
from storage.s3 import S3Store
from tests.s3server import MotoServer

MESSAGES = Message.__table__  # type: ignore[attr-defined]


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    s: ObjectStore
    if request.param == "s3":
        server: MotoServer = request.getfixturevalue("s3_server")
        s = await S3Store.open(server.new_bucket(), prefix="t/", endpoint_url=server.endpoint_url,
                               spool_dir=tmp_path / "spool")
    else:
        s = LocalStore(tmp_path / "objects", UrlSigner(b"k" * 32), "http://127.0.0.1:1")
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/gc.db")
    await upgrade_schema(engine)
    try:
        yield make_sessions(engine)
    finally:
        await engine.dispose()


async def test_list_keys_pages_through_a_folder_in_key_order(store: ObjectStore) -> None:
    keys = sorted(f"inbound/msg_{i:02d}/{j}" for i in range(7) for j in range(3))
    for key in keys:
        await store.put(key, b"x")
    before = time.time()
    await store.put("raw/other.eml", b"y")
    seen: list[str] = []
    after = ""
    while page := await store.list_keys("inbound/", after, limit=4):
        assert len(page) <= 4
        seen += [o.key for o in page]
        after = page[-1].key
    assert seen == keys
    listed = await store.list_keys("raw/")
    assert [o.key for o in listed] == ["raw/other.eml"]
    # Seconds since the epoch, when it was written (S3 keeps whole seconds).
    assert int(before) - 1 <= listed[0].modified <= time.time() + 1
    assert await store.list_keys("uploads/") == []


async def test_only_old_objects_of_messages_without_a_row_are_removed(
        store: ObjectStore, sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    kept, orphan, young = new_message_id(), new_message_id(), new_message_id()
    async with sessions() as session:
        conn = await session.connection()
        await conn.execute(MESSAGES.insert().values(
            id=kept, status="ready", mail_from="", peer="x", size=1, raw_key=raw_key(kept),
            raw_sha256="0" * 64, received_at=utcnow(), attempts=1, attachment_count=1,
            defects="[]"))
        await session.commit()
    for mid in (kept, orphan):
        for key in (raw_key(mid), body_key(mid, "text"), attachment_key(mid, 0)):
            await store.put(key, b"data")
    await store.put("raw/notes.txt", b"not one of ours")  # a key of no known shape
    if isinstance(store, LocalStore):
        # Age the files: the grace period is measured from the store's own timestamps.
        for path in (store.root / "raw").iterdir():
            os.utime(path, (time.time() - 7200, time.time() - 7200))
        for path in (store.root / "inbound").rglob("*"):
            os.utime(path, (time.time() - 7200, time.time() - 7200))
    grace = 3600.0 if isinstance(store, LocalStore) else 0.0
    await store.put(raw_key(young), b"in flight")  # written just now: maybe not committed yet

    dry = await remove_orphans(store, sessions, grace=grace, dry_run=True)
    orphan_keys = sorted([raw_key(orphan), body_key(orphan, "text"), attachment_key(orphan, 0)])
    expected = orphan_keys + ([raw_key(young)] if grace == 0 else [])
    assert sorted(dry.removed) == sorted(expected)
    assert await store.exists(raw_key(orphan))  # a dry run deletes nothing

    done = await remove_orphans(store, sessions, grace=grace)
    assert sorted(done.removed) == sorted(expected) and done.scanned == 8
    assert done.too_young == (1 if grace else 0)
    for key in orphan_keys:
        assert not await store.exists(key)
    for key in (raw_key(kept), body_key(kept, "text"), attachment_key(kept, 0), "raw/notes.txt"):
        assert await store.exists(key)
    assert await store.exists(raw_key(young)) == bool(grace)
