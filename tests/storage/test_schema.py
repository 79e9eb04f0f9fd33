"""The migrations and the SQLModel tables describe the same schema (they must never drift)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables)
from storage.db import head_revision, make_engine, upgrade_schema


async def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    try:
        before, after = await upgrade_schema(engine)
        assert (before, after) == (None, head_revision())
        async with engine.connect() as conn:
            diffs = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), SQLModel.metadata))
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
