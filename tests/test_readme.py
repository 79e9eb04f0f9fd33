"""The README's tour, run as written (ports and key substituted) against the real daemon."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import REPO, start_demo_daemon

TOOLS = ("swaks", "curl", "jq")


def tour_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## A tour in one terminal", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_readme_starts_with_the_two_commands() -> None:
    head = (REPO / "README.md").read_text().split("## ", 1)[0]
    assert "make run" in head and "make test" in head


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
        assert '"file_name": "notes.txt"' in out.stdout
        assert "\nready\n" in out.stdout
        assert out.stdout.rstrip().endswith("identical")
    finally:
        assert d.stop() == 0
