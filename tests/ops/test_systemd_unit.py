"""The systemd unit: `systemd-analyze verify` passes, the exposure score is at most 2.5 with only
CAP_NET_BIND_SERVICE kept, and scripts/install.sh stages a config that `check-config` accepts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "postroom.service"
ANALYZE = shutil.which("systemd-analyze")
POSTROOM = Path(sys.executable).with_name("postroom")

needs_analyze = pytest.mark.skipif(
    ANALYZE is None and not os.environ.get("CI"),
    reason="systemd-analyze is not installed (scripts/install-test-deps.sh installs it; "
           "under CI its absence fails)")


def _settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_has_what_operators_expect() -> None:
    s = _settings()
    assert s["Type"] == ["notify"] and s["Restart"] == ["on-failure"]
    assert s["User"] == ["postroom"] and s["StateDirectory"] == ["postroom"]
    assert s["ConfigurationDirectory"] == ["postroom"]
    assert "WatchdogSec" in s and "LimitNOFILE" in s
    assert s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert s["ExecStart"][0].startswith("/opt/postroom/.venv/bin/postroom serve ")
    # SIGTERM to the daemon only: it drains while its workers keep running (they end with it).
    assert s["KillMode"] == ["mixed"]


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    # The only change: ExecStart names this checkout's postroom instead of /opt/postroom's,
    # which verify insists exists.
    unit = tmp_path / "postroom.service"
    unit.write_text(UNIT.read_text().replace("/opt/postroom/.venv/bin/postroom", str(POSTROOM)))
    assert POSTROOM.exists()
    done = subprocess.run([str(ANALYZE), "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@needs_analyze
def test_the_exposure_score_is_at_most_2_5() -> None:
    done = subprocess.run([str(ANALYZE), "security", "--offline=yes", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for postroom\.service: ([0-9.]+)", done.stdout)
    assert score is not None, done.stdout[-2000:] + done.stderr
    assert float(score.group(1)) <= 2.5
    # Every capability but CAP_NET_BIND_SERVICE is gone: the one capability finding left is the
    # network group that holds it.
    kept = [line for line in done.stdout.splitlines() if line.startswith("✗ CapabilityBounding")]
    assert len(kept) == 1 and "BIND_SERVICE" in kept[0], kept


def test_the_install_script_stages_a_working_config(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    done = subprocess.run(["bash", str(REPO / "scripts" / "install.sh")], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "DESTDIR": str(stage), "SKIP_VENV": "1"})
    assert done.returncode == 0, done.stderr
    assert (stage / "etc/systemd/system/postroom.service").read_text() == UNIT.read_text()
    config = (stage / "etc/postroom/config.toml").read_text()
    assert 'url = "sqlite+aiosqlite:////var/lib/postroom/postroom.db"' in config
    assert 'path = "/var/lib/postroom/objects"' in config
    assert "[[agents]]" not in config  # no demo key printed into the journal
    assert oct((stage / "etc/postroom/config.toml").stat().st_mode & 0o777) == "0o640"
    checked = subprocess.run([str(POSTROOM), "check-config", "--config",
                              str(stage / "etc/postroom/config.toml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _group(name: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a systemd syscall group, nested groups expanded."""
    seen = set() if seen is None else seen
    out = subprocess.run([str(ANALYZE), "syscall-filter", "--no-pager", name],
                         capture_output=True, text=True, timeout=60).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("@"):
            if item not in seen:
                seen.add(item)
                calls |= _group(item, seen)
        else:
            calls.add(item)
    return calls


@needs_analyze
def test_the_system_call_filter_lets_the_workers_confine_themselves() -> None:
    # The sender verifier calls nice(2) (auth.nice), a content worker setrlimit(2)
    # (content.max_memory): a filtered call kills it with SIGSYS.
    allowed: set[str] = set()
    for entry in _settings()["SystemCallFilter"]:
        deny = entry.startswith("~")
        names = entry.lstrip("~").split()
        calls = set().union(*(_group(n) if n.startswith("@") else {n} for n in names))
        allowed = allowed - calls if deny else allowed | calls
    assert {"setpriority", "setrlimit", "prlimit64"} <= allowed
    assert not allowed & _group("@privileged")  # and the rest of the lockdown holds
