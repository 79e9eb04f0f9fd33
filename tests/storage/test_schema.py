"""The migrations and the SQLModel tables describe the same schema (they must never drift)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables)
from storage.db import head_revision, make_engine, upgrade_schema
from storage.search import outside_the_models


async def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    try:
        before, after = await upgrade_schema(engine)
        assert (before, after) == (None, head_revision())
        async with engine.connect() as conn:
            diffs = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={
                    "include_object": outside_the_models}), SQLModel.metadata))
    finally:
        await engine.dispose()
    assert diffs == []


async def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/nested/dir/s.db")
    try:
        async with engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
    finally:
        await engine.dispose()
    assert (mode, sync) == ("wal", 2)


def test_the_head_read_from_the_version_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from storage.db import _alembic_config

    assert head_revision() == ScriptDirectory.from_config(_alembic_config()).get_current_head()


async def test_a_child_process_migrates_and_the_parent_never_imports_alembic(
        tmp_path: Path) -> None:
    from storage.db import current_revision, migrate_in_child

    url = f"sqlite+aiosqlite:///{tmp_path}/child.db"
    status, said = await migrate_in_child(url, 5.0)
    assert status == 0, said
    engine = make_engine(url)
    try:
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
    (tmp_path / "a-file").write_text("")  # a database path under a file cannot be made
    status, said = await migrate_in_child(f"sqlite+aiosqlite:///{tmp_path}/a-file/x.db", 1.0)
    assert status == 1 and "schema upgrade failed" in said, said


def test_what_serve_imports_leaves_alembic_out() -> None:
    """≈ 11 MiB of a node's RSS."""
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", "import sys, daemon.server, daemon.cli; "
                            "print(any(m.startswith('alembic') for m in sys.modules))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False"


async def test_0007_gives_existing_messages_their_thread(tmp_path: Path) -> None:
    """Rows stored before `messages.thread_id` existed get the thread their headers name: the
    first of References, else In-Reply-To, else their own Message-ID; unextracted ones none."""
    from alembic import command
    from sqlalchemy import text

    from daemon.ids import thread_id_of
    from storage.db import _alembic_config

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    rows = [("msg_a", "<root@x>", None, None), ("msg_b", "<b@x>", "<root@x>", "<root@x> <a@x>"),
            ("msg_c", "<c@x>", "<b@x>", None), ("msg_d", None, None, None)]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), "0006_outbound"))
            for seq, (mid, header, reply_to, refs) in enumerate(rows, 1):
                await conn.execute(text(
                    "INSERT INTO messages (seq, id, status, mail_from, peer, size, raw_key, "
                    "raw_sha256, received_at, attempts, attachment_count, defects, direction, "
                    "message_id_header, in_reply_to, references_header) VALUES (:seq, :id, "
                    "'ready', 'a@x', 'p', 1, 'k', 's', '2026-01-01', 0, 0, '[]', 'inbound', "
                    ":h, :r, :refs)"), {"seq": seq, "id": mid, "h": header, "r": reply_to,
                                        "refs": refs})
        await upgrade_schema(engine)
        async with engine.connect() as conn:
            got = dict((await conn.execute(text(
                "SELECT id, thread_id FROM messages ORDER BY seq"))).all())
    finally:
        await engine.dispose()
    root = thread_id_of(None, None, "<root@x>")
    assert got == {"msg_a": root, "msg_b": root, "msg_c": thread_id_of(None, "<b@x>", "x"),
                   "msg_d": None}


async def test_0010_indexes_existing_messages_for_search_and_threads(tmp_path: Path) -> None:
    """Rows stored before SPEC §15 are found by their subject and addresses (their bodies wait
    for `reprocess --content`), and a reply to one of them finds its thread (`own_thread`)."""
    from alembic import command
    from sqlalchemy import text

    from daemon.ids import thread_id_for
    from storage.db import _alembic_config
    from storage.search import search

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), "0009_webhooks"))
            for seq, (mid, subject, sender, header) in enumerate([
                    ("msg_a", "quarterly zqfigures", "ann@x.test", "<a@x>"),
                    ("msg_b", "other", "zqbob@x.test", None),
                    ("msg_c", "unextracted", None, None)], 1):
                await conn.execute(text(
                    "INSERT INTO messages (seq, id, status, mail_from, peer, size, raw_key, "
                    "raw_sha256, received_at, attempts, attachment_count, defects, direction, "
                    "subject, from_header, message_id_header) VALUES (:seq, :id, 'ready', "
                    "'a@x', 'p', 1, 'k', 's', '2026-01-01', 0, 0, '[]', 'inbound', :subject, "
                    ":sender, :h)"), {"seq": seq, "id": mid, "subject": subject,
                                      "sender": sender, "h": header})
                await conn.execute(text(
                    "INSERT INTO recipients (message_seq, message_id, agent_id, address) "
                    "VALUES (:seq, :id, 'agt_1', 'ann@t.test')"), {"seq": seq, "id": mid})
        await upgrade_schema(engine)
        async with engine.connect() as conn:
            found = {q: await search(conn, "agt_1", q, 10, 0)
                     for q in ("zqfigures", "zqbob", "quarterly", "nothing")}
            own = dict((await conn.execute(text(
                "SELECT id, own_thread FROM messages ORDER BY seq"))).all())
            other_agent = await search(conn, "agt_2", "zqfigures", 10, 0)
    finally:
        await engine.dispose()
    assert found == {"zqfigures": [1], "zqbob": [2], "quarterly": [1], "nothing": []}
    assert other_agent == []
    assert own == {"msg_a": thread_id_for("<a@x>"), "msg_b": None, "msg_c": None}
