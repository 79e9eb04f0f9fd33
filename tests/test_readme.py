"""The README's tour, run as written (ports and key substituted) against the real daemon; and
the README and docs/ pages kept true of the tree: every link resolves, every path they name
exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import REPO, start_demo_daemon

TOOLS = ("swaks", "curl", "jq")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Inline code that names a file or folder of the repository (not an object key or a URL).
_REPO_PATH = re.compile(r"`((?:daemon|storage|extractors|tests|bench|systemd|scripts|docs|\.ci)"
                        r"/[^`\s<>…*]*)`")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def tour_block() -> str:
    """The first `sh` block after the heading "A tour in one terminal"."""
    text = (REPO / "README.md").read_text()
    section = text.split("## A tour in one terminal", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_readme_starts_with_the_two_commands() -> None:
    head = (REPO / "README.md").read_text().split("## ", 1)[0]
    assert "make run" in head and "make test" in head


def test_the_readme_stays_short() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


@pytest.mark.e2e  # starts a daemon; no fixture of the harness says so
def test_the_readme_tour_works_as_written(tmp_path: Path) -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:  # .ci/run installs them; a developer machine may not have them
        pytest.fail(f"the tour needs {', '.join(missing)}: apt-get install swaks curl jq")
    d, key = start_demo_daemon(tmp_path / "daemon")
    try:
        assert key is not None
        script = tour_block()
        assert "export POSTROOM_KEY=pr_paste_the_key_make_run_printed" in script
        script = script.replace("pr_paste_the_key_make_run_printed", key)
        script = script.replace("127.0.0.1:2525", f"127.0.0.1:{d.smtp_port}")
        script = script.replace("127.0.0.1:8025", f"127.0.0.1:{d.http_port}")
        work = tmp_path / "work"
        work.mkdir()
        shutil.copy(REPO / "config.toml", work / "config.toml")
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert '"subject": "Notes for you"' in out.stdout
        assert "The notes are attached." in out.stdout  # extracted_text
        assert "[smtp]\n" in out.stdout  # config.toml's first section, from the text route
        assert '"file_name": "notes.txt"' in out.stdout
        assert "\nready\n" in out.stdout
        assert out.stdout.rstrip().endswith("identical")
    finally:
        assert d.stop() == 0


def _anchors(page: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", _FENCE.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_link_of_the_docs_resolves(page: Path) -> None:
    broken = []
    for target in _LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md"
                                   and anchor not in _anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_path_the_docs_name_exists(page: Path) -> None:
    named = _REPO_PATH.findall(_FENCE.sub("", page.read_text()))
    missing = sorted({p for p in named if not (REPO / p.rstrip(".,;:")).exists()})
    assert not missing, f"{page.name} names paths that are not in the tree: {missing}"
