"""One daemon per seed module and backend (the local store, then S3 on moto's server), with the
agents the snippets act as: `sender` runs them, `recipient` is the second local agent that mail
they send is delivered to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import running_daemon
from tests.s3server import MotoServer
from tests.seeds.checks import Agent, Site, add_agent

# Sending is polled: a shorter interval than the default second keeps each send's wait short.
OUTBOUND = '[outbound]\npoll_interval = "0.2s"\n'


def _s3_storage(server: MotoServer) -> str:
    return (f'[storage]\nbackend = "s3"\nbucket = "{server.new_bucket("seeds")}"\n'
            f'endpoint_url = "{server.endpoint_url}"\nregion = "us-east-1"\n')


@pytest.fixture(scope="module", params=["local", "s3"])
def site(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    extra = OUTBOUND
    if request.param == "s3":
        extra += _s3_storage(request.getfixturevalue("s3_server"))
    root = tmp_path_factory.mktemp(f"seeds-{request.param}")
    with running_daemon(root, extra=extra) as d:
        yield Site(request.param, d)


@pytest.fixture(scope="module")
def sender(site: Site) -> Agent:
    return add_agent(site.daemon, "ann", "ann@agents.test")


@pytest.fixture(scope="module")
def recipient(site: Site) -> Agent:
    return add_agent(site.daemon, "ben", "ben@agents.test")
