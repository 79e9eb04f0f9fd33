"""Database engine, sessions, schema versioning and the translation of database errors.

SQLite runs in WAL mode with `synchronous=FULL`, so a committed row survives a power cut, and a
bounded busy timeout, so a locked database becomes a 451 rather than a hang. SQLAlchemy errors
are turned into `TransientError` here and nowhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Insert, Table, event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.errors import TransientError


class Conflict(Exception):
    """A unique constraint said no (another writer got there first)."""


def sqlite_path(url: str) -> Path | None:
    """The file behind a sqlite URL, None for other databases or an in-memory one."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return None if not path or path.startswith(":memory:") else Path(path)


def make_engine(url: str, busy_timeout: float = 5.0) -> AsyncEngine:
    """An async engine for `url`; SQLite gets its folder, WAL, FULL sync and a busy timeout."""
    # Bound values (addresses, ids) never appear in exception text, so never in logs.
    kwargs: dict[str, Any] = {"hide_parameters": True}
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        # A fixed pool: every aiosqlite connection is a thread and a file open, too dear to make
        # and drop per burst (the default overflow does exactly that under concurrency).
        kwargs.update(connect_args={"timeout": busy_timeout}, pool_size=24, max_overflow=0,
                      pool_timeout=busy_timeout)
    else:
        kwargs.update(pool_size=10, max_overflow=10, pool_timeout=busy_timeout,
                      pool_pre_ping=True)
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.close()
    return engine


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The session factory every caller uses; objects stay readable after commit."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@contextlib.asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """Turn SQLAlchemy failures into our own: unique violations → Conflict, the rest → Transient."""
    try:
        yield
    except IntegrityError as e:
        raise Conflict(_driver_message(e)) from e
    except (DBAPIError, SQLAlchemyError, OSError) as e:
        raise TransientError(f"database: {_driver_message(e)}") from e


def _driver_message(e: BaseException) -> str:
    """The driver's own words (not SQLAlchemy's, which quote the statement)."""
    orig = getattr(e, "orig", None) or e
    return f"{type(orig).__name__}: {str(orig).splitlines()[0][:160] if str(orig) else ''}"


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("storage") / "migrations"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest migration this code ships."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The migration the database is at, None when it has no schema yet."""
    async with translated_errors(), engine.connect() as conn:
        return await conn.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision())


async def upgrade_schema(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """Apply every pending migration; returns (before, after) revisions."""
    before = await current_revision(engine)
    async with translated_errors(), engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), "head"))
    return before, await current_revision(engine)


def insert_ignoring_conflicts(conn: AsyncConnection, table: Table) -> Insert:
    """`INSERT … ON CONFLICT DO NOTHING` for this connection's dialect (SQLite or PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return postgresql_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()
