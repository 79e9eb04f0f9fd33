"""Fixtures of both tiers: the S3 API server (moto, a real process) and the machine's
PostgreSQL, which the S3 and PostgreSQL tests run against; a daemon shared by one module's
end-to-end tests, with agents, and a fresh-daemon root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import pgserver
from tests.harness import Daemon, running_daemon
from tests.s3server import S3_ENV, S3_ENV_REMOVED, MotoServer, start_moto_server

# The figures line (tests/figures.py): its hooks are this plugin's.
pytest_plugins = ["tests.figures"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's S3 server for the whole session; the AWS chain of this process (and of daemons it
    starts) finds its test credentials in the environment while it runs."""
    with pytest.MonkeyPatch.context() as env:
        for name in S3_ENV_REMOVED:
            env.delenv(name, raising=False)
        for name, value in S3_ENV.items():
            env.setenv(name, value)
        server = start_moto_server(tmp_path_factory.mktemp("moto"))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def pg() -> Iterator[pgserver.PgServer]:
    """The machine's PostgreSQL (the tests fail without one); fresh databases come from
    `pg.new_database()` and are dropped when the run ends."""
    yield pgserver.server()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon shared by the tests of one module."""
    with running_daemon(tmp_path_factory.mktemp("postroom")) as d:
        yield d


@pytest.fixture(scope="module")
def alice(daemon: Daemon) -> dict[str, Any]:
    return daemon.add_agent("alice", "alice@agents.test")


@pytest.fixture(scope="module")
def bob(daemon: Daemon) -> dict[str, Any]:
    return daemon.add_agent("bob", "bob@agents.test", "*@bob.test")


@pytest.fixture
def fresh_root(tmp_path: Path) -> Path:
    return tmp_path / "daemon"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    pgserver.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the end-to-end tests (those that start a daemon) `e2e`, so `make unit` leaves them."""
    for item in items:
        module = getattr(item, "module", None)
        fixtures = getattr(item, "fixturenames", ())
        if (module is not None and hasattr(module, "running_daemon")) or {
                "daemon", "fresh_root"} & set(fixtures):
            item.add_marker(pytest.mark.e2e)
