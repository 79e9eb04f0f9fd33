"""Running a seed snippet as a reader of the seed would: Python in an interpreter process of its
own, shell through bash, JavaScript with node, each in a directory holding the files it opens.

What is added around the snippet is only a prelude that constructs the client (the one change
SPEC §17 allows) or defines the value the seed assumes (`fileBlob`), and an epilogue that writes
named values to `snippet-report.json` for the test to check; the snippet itself is run as given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPORT = "snippet-report.json"
TIMEOUT = 90.0


@dataclass(frozen=True)
class Ran:
    """What a snippet printed, and the values its epilogue reported."""

    stdout: str
    stderr: str
    reported: dict[str, Any]


def _run(args: list[str], cwd: Path, env: Mapping[str, str] | None, what: str) -> Ran:
    (cwd / REPORT).unlink(missing_ok=True)
    done = subprocess.run(args, cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{what} exited {done.returncode}\n--- stdout\n{done.stdout}\n"
                             f"--- stderr\n{done.stderr}")
    report = cwd / REPORT
    reported = json.loads(report.read_text()) if report.is_file() else {}
    return Ran(done.stdout, done.stderr, reported)


def client_prelude(base_url: str, api_key: str) -> str:
    """The only line of a Python SDK snippet that is postroom's own."""
    return (f"from agentmail_client import Client; "
            f"client = Client({base_url!r}, {api_key!r})\n")


def run_python(code: str, cwd: Path, prelude: str = "",
               report: Mapping[str, str] | None = None) -> Ran:
    """`prelude` + `code` as a script run by this interpreter; `report` names expressions
    (evaluated after the snippet) whose values come back in `Ran.reported`."""
    epilogue = ""
    if report:
        values = ", ".join(f"{name!r}: {expr}" for name, expr in report.items())
        epilogue = (f"\nimport json as _seed_json\nwith open({REPORT!r}, 'w') as _seed_out:\n"
                    f"    _seed_json.dump({{{values}}}, _seed_out, default=str)\n")
    script = cwd / "snippet.py"
    script.write_text(prelude + code + epilogue)
    return _run([sys.executable, str(script)], cwd, None, "python snippet")


def run_bash(code: str, cwd: Path, env: Mapping[str, str]) -> Ran:
    """`code` through bash with errexit, nounset and pipefail set, as a careful user runs it."""
    return _run(["bash", "-euo", "pipefail", "-c", code], cwd, env, "shell snippet")


def run_node(code: str, cwd: Path, env: Mapping[str, str], prelude: str = "",
             report: Mapping[str, str] | None = None) -> Ran:
    """`prelude` + `code` as an ES module (top-level await) run by node."""
    epilogue = ""
    if report:
        values = ", ".join(f"{json.dumps(name)}: {expr}" for name, expr in report.items())
        epilogue = (f"\nawait import('node:fs').then((fs) => fs.writeFileSync("
                    f"{json.dumps(REPORT)}, JSON.stringify({{{values}}})));\n")
    script = cwd / "snippet.mjs"
    script.write_text(prelude + code + epilogue)
    return _run(["node", str(script)], cwd, env, "node snippet")
