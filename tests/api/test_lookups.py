"""The API's Core lookups: the event loop's SQLite reader and the pooled path answer alike,
visibility is part of every answer, and a locked database falls back instead of failing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from daemon.api.lookups import Lookups
from daemon.api.views import attachment_view, message_view
from daemon.ids import hash_api_key
from storage.db import make_engine, make_sessions, upgrade_schema
from storage.errors import TransientError
from storage.models import Agent, Attachment, Message, Recipient

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/l.db", busy_timeout=5)
    await upgrade_schema(engine)
    async with make_sessions(engine)() as session:
        for name in ("a", "b"):
            session.add(Agent(id=f"agt_{name}", name=name, key_hash=hash_api_key(f"pr_{name}"),
                              key_prefix=f"pr_{name}", created_at=T0, updated_at=T0))
        session.add(Message(seq=1, id="msg_1", status="ready", mail_from="s@example.org",
                            peer="127.0.0.1", size=10, raw_key="raw/msg_1.eml", raw_sha256="0",
                            received_at=T0, processed_at=T0, from_="S <s@example.org>",
                            subject="hi", references="<r@x>", attachment_count=2,
                            defects='["x"]'))
        session.add(Message(seq=2, id="msg_2", status="processing", mail_from="s@example.org",
                            peer="127.0.0.1", size=10, raw_key="raw/msg_2.eml", raw_sha256="0",
                            received_at=T0))
        session.add_all([
            Recipient(message_seq=1, message_id="msg_1", agent_id="agt_a", address="a@x.test"),
            Recipient(message_seq=1, message_id="msg_1", agent_id="agt_a",
                      address="a+tag@x.test", tag="tag"),
            Recipient(message_seq=1, message_id="msg_1", agent_id="agt_b", address="b@x.test"),
            Recipient(message_seq=2, message_id="msg_2", agent_id="agt_a", address="a@x.test"),
        ])
        for index in (1, 0):
            session.add(Attachment(
                id=f"att_{index}", message_id="msg_1", index=index, status="ready",
                file_name=f"f{index}.pdf", content_type="application/pdf",
                content_type_mismatch=index == 1, encrypted=False,
                encryption='{"kind": "pgp"}' if index else None, size=5, sha256="0",
                path=str(index + 1), source="mime", object_key=f"inbound/msg_1/{index}",
                created_at=T0, ready_at=T0 if index else None))
        await session.commit()
    yield engine
    await engine.dispose()


async def _answers(lookups: Lookups) -> list[object]:
    found = await lookups.message("agt_a", "msg_1")
    assert found is not None
    mine, atts = found
    status, att = await lookups.attachment("agt_a", "msg_1", 1) or ("", None)
    return [
        await lookups.agent_id_for_key_hash(hash_api_key("pr_b")),
        await lookups.agent_id_for_key_hash(hash_api_key("pr_nobody")),
        message_view(mine[0], mine, atts, None, None),
        status, attachment_view(att),
        await lookups.attachment("agt_a", "msg_1", 7),
        await lookups.attachment("agt_a", "msg_2", 0),
        await lookups.message("agt_a", "msg_2", with_attachments=False),
    ]


async def test_the_loop_reader_answers_exactly_as_the_pooled_path(engine: AsyncEngine) -> None:
    on_loop, pooled = Lookups(engine), Lookups(engine, on_loop=False)
    try:
        answers = await _answers(on_loop)
        assert answers == await _answers(pooled)
    finally:
        on_loop.close()
    view = answers[2]
    assert isinstance(view, dict)
    assert view["recipients"] == ["a@x.test", "a+tag@x.test"] and view["tag"] == "tag"
    assert view["from"] == "S <s@example.org>" and view["references"] == "<r@x>"
    assert view["received_at"] == "2026-01-02T03:04:05.678Z" and view["defects"] == ["x"]
    assert [a["index"] for a in view["attachments"]] == [0, 1]
    assert view["attachments"][1]["content_type_mismatch"] is True
    assert view["attachments"][0]["content_type_mismatch"] is False
    assert answers[3:5] == ["ready", view["attachments"][1]]
    assert answers[0:2] == ["agt_b", None]
    assert answers[5] == ("ready", None)  # no attachment 7 on a finished message
    assert answers[6] == ("processing", None)


async def test_a_message_of_another_agent_is_as_missing_as_a_missing_one(
        engine: AsyncEngine) -> None:
    for lookups in (Lookups(engine), Lookups(engine, on_loop=False)):
        try:
            assert await lookups.message("agt_b", "msg_2") is None
            assert await lookups.message("agt_b", "msg_nope") is None
            assert await lookups.attachment("agt_b", "msg_2", 0) is None
            assert await lookups.attachment("agt_b", "msg_nope", 0) is None
            found = await lookups.message("agt_b", "msg_1")
            assert found is not None
            assert [r.address for r in found[0]] == ["b@x.test"]
        finally:
            lookups.close()


async def test_a_locked_database_is_read_through_the_pool_without_blocking_the_loop(
        engine: AsyncEngine, tmp_path: Path) -> None:
    await engine.dispose()  # the lock below needs the file to itself
    holder = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE agents SET name = name")
    lookups = Lookups(engine)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    released = []

    def release() -> None:
        holder.execute("COMMIT")
        holder.close()
        released.append(True)

    ticking = asyncio.create_task(ticker())
    asyncio.get_running_loop().call_later(0.3, release)
    try:
        assert await lookups.agent_id_for_key_hash(hash_api_key("pr_a")) == "agt_a"
    finally:
        ticking.cancel()
        lookups.close()
    assert released  # it waited for the lock, on the pool's thread
    assert ticks >= 10  # while the loop went on running


async def test_a_sqlite_file_is_read_on_the_loop_without_a_pooled_connection(
        engine: AsyncEngine) -> None:
    unusable = create_async_engine(engine.url)

    @event.listens_for(unusable.sync_engine, "connect")
    def _refuse(*_: object) -> None:
        raise OSError("no pooled connections in this test")

    on_loop, pooled = Lookups(unusable), Lookups(unusable, on_loop=False)
    try:
        assert await on_loop.agent_id_for_key_hash(hash_api_key("pr_a")) == "agt_a"
        assert await on_loop.attachment("agt_a", "msg_1", 0) is not None
        with pytest.raises(TransientError):
            await pooled.agent_id_for_key_hash(hash_api_key("pr_a"))
    finally:
        on_loop.close()
        await unusable.dispose()
