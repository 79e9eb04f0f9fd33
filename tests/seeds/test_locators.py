"""Without a daemon: every seed yields exactly the snippets the seed tests run, each whole code of
its language, with no code left outside them, so a snippet that moves or vanishes fails here
before any end-to-end test needs it."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import pytest

from tests.seeds.snippets import SEED_FILES, SNIPPETS, first_occurrences, seed_lines, snippet, span

EXPECTED = {"000": 5, "001": 6, "002": 5}
# The language labels seeds 000 and 002 put on the line before each snippet (001 has none).
LABELS = {"python", "Python", "bash", "javascript", "json"}
# Lines no prose of these documents looks like: comments, assignments, calls, braces, shell.
CODE_LIKE = re.compile(r"\s*(#\s|//|const |await |import |from \S+ import |curl |with |[{}\])]|"
                       r"[A-Za-z_][\w.\[\]\"']* *= |[A-Za-z_][\w.]*\()|\s{2,}[^\s•\d]|"
                       r".*(\\|;|\$\(.*)$")


def test_every_seed_yields_exactly_its_snippets() -> None:
    counts = Counter(loc.seed for loc in SNIPPETS.values())
    assert counts == EXPECTED
    for seed in SEED_FILES:
        spans = sorted(span(loc) for loc in SNIPPETS.values() if loc.seed == seed)
        for (_, end), (start, _) in pairwise(spans):
            assert end <= start, f"seed {seed}: snippets overlap"
    # An opening line a seed repeats is claimed once per occurrence, in order.
    claimed: dict[tuple[str, str], list[int]] = defaultdict(list)
    for loc in SNIPPETS.values():
        claimed[(loc.seed, loc.first)].append(loc.nth)
    for (seed, first), nths in claimed.items():
        loc = next(x for x in SNIPPETS.values() if (x.seed, x.first) == (seed, first))
        assert sorted(nths) == list(range(1, first_occurrences(loc) + 1)), (seed, first)


@pytest.mark.parametrize("seed", ["000", "002"])
def test_each_language_label_opens_a_snippet(seed: str) -> None:
    lines = seed_lines(seed)
    labelled = [i + 1 for i, line in enumerate(lines) if line in LABELS]
    starts = sorted(span(loc)[0] for loc in SNIPPETS.values() if loc.seed == seed)
    assert labelled == starts


@pytest.mark.parametrize("seed", sorted(SEED_FILES))
def test_no_code_is_left_outside_the_snippets(seed: str) -> None:
    covered: set[int] = set()
    for loc in SNIPPETS.values():
        if loc.seed == seed:
            start, end = span(loc)
            covered |= set(range(start, end))
    stray = [line for i, line in enumerate(seed_lines(seed))
             if i not in covered and CODE_LIKE.match(line)]
    assert stray == []


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_each_snippet_is_whole_code_of_its_language(name: str, tmp_path: Path) -> None:
    text, language = snippet(name), SNIPPETS[name].language
    if language == "python":
        ast.parse(text)
    elif language == "json":
        assert isinstance(json.loads(text), dict)
    else:
        tool = {"bash": "bash", "javascript": "node"}[language]
        path = tmp_path / ("snippet.sh" if language == "bash" else "snippet.mjs")
        path.write_text(text)
        assert shutil.which(tool), f"{tool} is needed to check the seed snippets"
        args = [tool, "-n", str(path)] if language == "bash" else [tool, "--check", str(path)]
        checked = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        assert checked.returncode == 0, checked.stderr
