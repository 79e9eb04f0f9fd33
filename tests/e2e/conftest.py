"""Fixtures of the end-to-end tier: a shared daemon with agents, and a fresh-daemon root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Daemon, running_daemon


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
