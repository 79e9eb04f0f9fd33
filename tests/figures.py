"""The suite's figures line: counts that reliability and security tests record as they run.

A test calls `figures.add("hostile inputs tried", 1)`; at the end of the run pytest prints one
`figures:` line per category (summed over pytest-xdist workers, and over the runs of one
`make test` through POSTROOM_FIGURES_FILE), which the README quotes. The
counts are what the tests really did, never a constant: a category nobody recorded is not printed.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

# The categories the README quotes, in the order they are printed; others follow alphabetically.
CATEGORIES = (
    "faults survived",
    "hostile inputs tried",
    "authz cases checked",
    "messages accepted under faults",
    "messages lost",
    "messages duplicated",
)

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def add(category: str, n: int = 1) -> None:
    """Count `n` more of `category` (0 still makes the category appear: "messages lost 0")."""
    with _lock:
        _counts[category] += n


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def merge(counts: dict[str, int]) -> None:
    for category, n in counts.items():
        add(category, n)


def lines() -> list[str]:
    counts = snapshot()
    order = [c for c in CATEGORIES if c in counts]
    order += sorted(c for c in counts if c not in CATEGORIES)
    return [f"figures: {c}: {counts[c]:,}" for c in order]


# Hooks, registered by tests/conftest.py.

def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker hands its counts to the controller
        workeroutput["postroom_figures"] = snapshot()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    merge(getattr(node, "workeroutput", {}).get("postroom_figures", {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if hasattr(terminalreporter.config, "workeroutput"):
        return
    title = "figures"
    carried = os.environ.get("POSTROOM_FIGURES_FILE")
    if carried:
        # `make test` runs pytest three times (main, serial, PostgreSQL); each run adds its
        # counts to the file and prints the totals so far, so the last run prints the suite's.
        path = Path(carried)
        if path.is_file():
            merge(json.loads(path.read_text()))
        path.write_text(json.dumps(snapshot()))
        title = "figures (this make test so far)"
    out = lines()
    if out:
        terminalreporter.section(title)
        for line in out:
            terminalreporter.write_line(line)
