"""Database engine, sessions, schema versioning and the translation of database errors.

SQLite runs in WAL mode with `synchronous=FULL`, so a committed row survives a power cut, and a
bounded busy timeout, so a locked database becomes a 451 rather than a hang. PostgreSQL gets the
same bounds: the pool wait, the connect, a lock wait and every statement have a timeout, and a
connection is pinged before use, so a restarted server costs the transactions in flight (451)
and nothing after. SQLAlchemy errors become `DatabaseError` (a `TransientError`) here only.

Rows with a `seq` (messages, events) are read by cursors (`after=`), which must never see a
lower `seq` commit after a higher one. On SQLite one writer commits at a time. On PostgreSQL,
sequence values are handed out at insert and commits land in any order, so every transaction
that inserts such rows first takes one transaction-scoped advisory lock (`commit_in_order`):
among them, `seq` order is commit order, across every node on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Insert, Table, create_engine, event, inspect, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.errors import DatabaseError, DatabaseUnavailable, SchemaMismatch

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# pg_advisory_xact_lock key of `commit_in_order` ("postroom" in ASCII, as a bigint).
COMMIT_ORDER_LOCK = int.from_bytes(b"postroom", "big") & (2**63 - 1)
_ORDERED = "postroom.commit_ordered"
MIGRATION_LOCK = COMMIT_ORDER_LOCK - 1


class Conflict(Exception):
    """A unique constraint said no (another writer got there first)."""


def sqlite_path(url: str) -> Path | None:
    """The file behind a sqlite URL, None for other databases or an in-memory one."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return None if not path or path.startswith(":memory:") else Path(path)


def make_engine(url: str, busy_timeout: float = 5.0, pool_size: int = 10) -> AsyncEngine:
    """An async engine for `url`; SQLite gets its folder, WAL, FULL sync and a busy timeout,
    PostgreSQL a fixed pool of `pool_size` connections and bounded waits."""
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
        # Every wait is bounded: a pool checkout, a connect, a lock (lock_timeout), a statement
        # (command_timeout) and a transaction left idle by a stalled node (the server ends it).
        lock_ms = str(int(busy_timeout * 1000))
        kwargs.update(pool_size=pool_size, max_overflow=0, pool_timeout=busy_timeout,
                      pool_pre_ping=True,
                      connect_args={
                          "timeout": busy_timeout,
                          "command_timeout": busy_timeout * 4,
                          "server_settings": {
                              "application_name": "postroom",
                              "lock_timeout": lock_ms,
                              "idle_in_transaction_session_timeout": str(int(
                                  busy_timeout * 12 * 1000)),
                          }})
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        _sqlite_pragmas(engine.sync_engine, busy_timeout)
    return engine


def _sqlite_pragmas(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.close()


def make_writer_engine(engine: AsyncEngine, busy_timeout: float) -> Engine | None:
    """For a SQLite file, a plain (synchronous) engine of one connection on the same file, for
    the group committer's thread: a batch then runs there statement after statement, instead
    of one hop to aiosqlite's thread and back per statement. None for other databases."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or sqlite_path(str(url)) is None:
        return None
    sync = create_engine(url.set(drivername="sqlite"), hide_parameters=True,
                         connect_args={"timeout": busy_timeout, "check_same_thread": False},
                         pool_size=1, max_overflow=0, pool_timeout=busy_timeout)
    _sqlite_pragmas(sync, busy_timeout)
    return sync


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
    except (DBAPIError, SQLAlchemyError, OSError, TimeoutError) as e:
        kind = DatabaseUnavailable if _unavailable(e) else DatabaseError
        raise kind(f"database: {_driver_message(e)}") from e


# SQLSTATE classes and codes that say the server, not the statement, is the trouble:
# connection exceptions, insufficient resources, operator intervention, lock not available.
_UNAVAILABLE_STATES = ("08", "53", "57", "55P03")


def _unavailable(e: BaseException) -> bool:
    if isinstance(e, OSError | TimeoutError | OperationalError | InterfaceError
                  | PoolTimeout | DisconnectionError):
        return True
    if isinstance(e, DBAPIError) and e.connection_invalidated:
        return True
    orig = getattr(e, "orig", None)
    state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    return bool(state) and state.startswith(_UNAVAILABLE_STATES)


def _driver_message(e: BaseException) -> str:
    """The driver's own words (not SQLAlchemy's, which quote the statement)."""
    orig = getattr(e, "orig", None) or e
    return f"{type(orig).__name__}: {str(orig).splitlines()[0][:160] if str(orig) else ''}"


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    # alembic is imported only to migrate (≈ 11 MiB a serving node never needs: the daemon
    # migrates SQLite in a child process, `migrate_in_child`).
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("storage") / "migrations"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


_REVISION = re.compile(r"^(down_)?revision\s*(?::[^=]*)?=\s*(?:[\"']([^\"']+)[\"']|None)", re.M)


def head_revision() -> str | None:
    """The newest migration this code ships, read from the version files (no alembic import:
    tests/storage/test_schema.py holds it to alembic's own answer)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (resources.files("storage") / "migrations" / "versions").iterdir():
        if not path.name.endswith(".py") or path.name.startswith("__"):
            continue
        for m in _REVISION.finditer(path.read_text(encoding="utf-8")):
            if m.group(2) is not None:
                (parents if m.group(1) else revisions).add(m.group(2))
    heads = revisions - parents
    if len(heads) > 1:
        raise RuntimeError(f"migrations have several heads: {sorted(heads)}")
    return next(iter(heads), None)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The migration the database is at, None when it has no schema yet."""
    def read(c: Connection) -> str | None:
        if not inspect(c).has_table("alembic_version"):
            return None
        value = c.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if value is None else str(value)

    async with translated_errors(), engine.connect() as conn:
        return await conn.run_sync(read)


async def upgrade_schema(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """Apply every pending migration; returns (before, after) revisions."""
    from alembic import command

    before = await current_revision(engine)
    async with translated_errors(), engine.begin() as conn:
        # Nodes upgrading at once take turns; the later ones find nothing left to do.
        await advisory_lock(conn, MIGRATION_LOCK)
        await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), "head"))
    return before, await current_revision(engine)


async def migrate_in_child(url: str, busy_timeout: float) -> tuple[int, str]:
    """`upgrade_schema` in a child process (`python -m storage.migrate`), so the caller never
    imports alembic; returns the child's exit status and the end of what it printed."""
    env = {**os.environ, "POSTROOM_MIGRATE_URL": url,
           "POSTROOM_MIGRATE_BUSY_TIMEOUT": str(busy_timeout)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "storage.migrate", env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode(errors="replace")[-2000:]


async def open_database(url: str, busy_timeout: float = 5.0, pool_size: int = 10
                        ) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """Engine and sessions with the schema current: SQLite upgrades itself (in a child
    process); any other database must be upgraded already (`postroom db upgrade`), else
    `SchemaMismatch` says what to do."""
    engine = make_engine(url, busy_timeout, pool_size)
    current, head = await current_revision(engine), head_revision()
    if current != head and url.startswith("sqlite"):
        status, said = await migrate_in_child(url, busy_timeout)
        if status != 0 or await current_revision(engine) != head:
            await engine.dispose()
            raise SchemaMismatch(f"database schema upgrade failed: {said.strip()[-400:]}")
    elif current != head:
        await engine.dispose()
        raise SchemaMismatch(f"database schema is at {current}, this version needs {head}: "
                             "run `postroom db upgrade`")
    return engine, make_sessions(engine)


def commit_in_order(conn: Connection) -> None:
    """Make this transaction's `seq` values commit in order (PostgreSQL; see the module text).

    Call it before inserting a row with a `seq`. Taken at most once per transaction when the
    caller marks the transaction (`ordered_transaction`); otherwise the lock is re-entrant and
    a second call only costs a round trip.
    """
    if conn.dialect.name != "postgresql" or conn.info.get(_ORDERED):
        return
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": COMMIT_ORDER_LOCK})


@contextlib.contextmanager
def ordered_transaction(conn: Connection) -> Iterator[None]:
    """Take the commit-order lock now, for the whole of the transaction open on `conn`."""
    commit_in_order(conn)
    conn.info[_ORDERED] = True
    try:
        yield
    finally:
        conn.info.pop(_ORDERED, None)


async def advisory_lock(conn: AsyncConnection, key: int) -> None:
    """A transaction-scoped advisory lock on PostgreSQL (SQLite: its write lock does the same)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def insert_ignoring_conflicts(conn: AsyncConnection | Connection, table: Table) -> Insert:
    """`INSERT … ON CONFLICT DO NOTHING` for this connection's dialect (SQLite or PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return postgresql_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


async def release_leases(sessions: async_sessionmaker[AsyncSession], table: Table,
                         owner: str | None = None) -> int:
    """Clear the `lease_owner`/`lease_expires_at` of `table`'s rows that `owner` holds (a
    node stopping), or of every leased row (`None`: a SQLite node starting, whose leases can
    only be a dead run's); returns how many."""
    c = table.c
    held = c.lease_owner.is_not(None) if owner is None else c.lease_owner == owner
    async with sessions() as session, translated_errors():
        result = await session.execute(
            table.update().where(held).values(lease_owner=None, lease_expires_at=None))
        await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]
