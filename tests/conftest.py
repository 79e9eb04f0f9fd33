"""Fixtures of both tiers: the S3 API server (moto, a real process) the S3 tests run against."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3server import S3_ENV, S3_ENV_REMOVED, MotoServer, start_moto_server


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
