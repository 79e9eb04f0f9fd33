"""PostgreSQL for the tests: the machine's own server, a fresh database for every use.

The server is the one the machine runs (127.0.0.1:5432, trust auth; `POSTROOM_TEST_PG` names
another). Each test run makes one template database with the schema upgraded by postroom's own
migrations, and every daemon or test gets a copy of it (`CREATE DATABASE … TEMPLATE`, a few
milliseconds), dropped when the run ends. Databases left by a run that was killed are dropped by
the next. A server that does not answer fails the tests that need it, saying so.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg

from storage.spool import pid_alive

ADMIN_DSN = os.environ.get("POSTROOM_TEST_PG", "postgresql://127.0.0.1:5432/test")
PREFIX = "postroom_t"
T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a private loop in a thread: callable from sync code and from inside a
    running loop alike."""
    out: list[T] = []
    err: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(coro))
        except BaseException as e:  # handed to the caller below
            err.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def sqlalchemy_url(dsn: str) -> str:
    """The SQLAlchemy URL postroom's config takes for an asyncpg DSN."""
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


def _owner_alive(database: str) -> bool:
    """Is the test run that made `database` (its pid is in the name) still running? Another
    run's databases are never touched while it lives, even idle between two daemons."""
    try:
        pid = int(database[len(PREFIX) + 1:].split("_", 1)[0])
    except ValueError:
        return False
    return pid_alive(pid)


class PgServer:
    """One test run's handle on the server: makes and drops its databases."""

    def __init__(self, admin_dsn: str = ADMIN_DSN) -> None:
        self.admin_dsn = admin_dsn
        self.run_tag = f"{PREFIX}_{os.getpid()}"
        self._names = itertools.count()
        self._template: str | None = None
        self._lock = threading.Lock()

    def dsn(self, database: str) -> str:
        base, _, _ = self.admin_dsn.rpartition("/")
        return f"{base}/{database}"

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn, timeout=5)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def check(self) -> str:
        """The server's version; raises when it does not answer."""
        async def go() -> str:
            conn = await asyncpg.connect(self.admin_dsn, timeout=5)
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()
        return run_sync(go())

    def drop_leftovers(self) -> None:
        """Drop databases of earlier runs that were killed before they could (their process
        is gone and nobody is connected to them)."""
        async def go() -> None:
            conn = await asyncpg.connect(self.admin_dsn, timeout=5)
            try:
                names = [r[0] for r in await conn.fetch(
                    "SELECT datname FROM pg_database d WHERE datname LIKE $1 AND NOT EXISTS "
                    "(SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
                    f"{PREFIX}\\_%")]
                for name in names:
                    if not _owner_alive(name):
                        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            finally:
                await conn.close()
        run_sync(go())

    def _template_db(self) -> str:
        with self._lock:
            if self._template is None:
                name = f"{self.run_tag}_template"
                run_sync(self._admin(f'DROP DATABASE IF EXISTS "{name}"',
                                     f'CREATE DATABASE "{name}"'))
                from storage.db import make_engine, upgrade_schema

                async def upgrade() -> None:
                    engine = make_engine(sqlalchemy_url(self.dsn(name)))
                    try:
                        await upgrade_schema(engine)
                    finally:
                        await engine.dispose()
                run_sync(upgrade())
                self._template = name
            return self._template

    def new_database(self, upgraded: bool = True) -> str:
        """A new empty database (with postroom's schema when `upgraded`); its SQLAlchemy URL."""
        name = f"{self.run_tag}_{next(self._names)}"
        template = f' TEMPLATE "{self._template_db()}"' if upgraded else ""
        run_sync(self._admin(f'CREATE DATABASE "{name}"{template}'))
        return sqlalchemy_url(self.dsn(name))

    def connect(self, url: str) -> Any:
        """An asyncpg connection coroutine for a URL from `new_database`."""
        return asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1),
                               timeout=5)

    def fetch(self, url: str, query: str, *args: Any) -> list[Any]:
        """Rows of one query on the database at `url`."""
        async def go() -> list[Any]:
            conn = await self.connect(url)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()
        return run_sync(go())

    def drop_all(self) -> None:
        """Drop this run's databases (a daemon still connected is forced off)."""
        async def go() -> None:
            conn = await asyncpg.connect(self.admin_dsn, timeout=5)
            try:
                for (name,) in await conn.fetch(
                        "SELECT datname FROM pg_database WHERE datname LIKE $1",
                        self.run_tag + "\\_%"):
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()
        run_sync(go())


def restart_cluster() -> None:
    """Restart the machine's PostgreSQL cluster (fast mode: sessions are cut off), as an
    operator or a crash would; returns once it accepts connections again."""
    control_cluster("restart")
    PgServer().check()


def control_cluster(action: str) -> None:
    """`pg_ctlcluster … main <action>` ("stop", "start", "restart") in fast mode."""
    import subprocess
    from pathlib import Path

    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    extra = ["--", "-m", "fast"] if action in ("stop", "restart") else []
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main",
                    action, *extra], check=True, timeout=120, capture_output=True)


_server: PgServer | None = None
_failure: str | None = None


def server() -> PgServer:
    """This run's PgServer, connected on first use; fails the test without one."""
    global _server, _failure
    import pytest

    if _server is None and _failure is None:
        candidate = PgServer()
        try:
            candidate.check()
            candidate.drop_leftovers()
            _server = candidate
        except (OSError, asyncpg.PostgresError, TimeoutError) as e:
            _failure = f"PostgreSQL at {ADMIN_DSN} does not answer: {type(e).__name__}: {e}"
    if _server is None:
        assert _failure is not None
        pytest.fail(_failure + " (the PostgreSQL tests need it: scripts/start-postgres.sh "
                    "starts the machine's cluster, as `make test` and .ci/run do)")
    return _server


def shutdown() -> None:
    """Drop this run's databases, if any were made."""
    if _server is not None:
        _server.drop_all()
