"""Fixtures of both tiers: the S3 API server (moto, a real process) and the machine's
PostgreSQL, which the S3 and PostgreSQL tests run against."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import pgserver
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    pgserver.shutdown()
