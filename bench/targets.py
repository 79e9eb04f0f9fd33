"""The servers the benchmark drives, each started here in its own temp dir and process group.

* `postroom`: `python -m daemon serve` with SQLite and the local store in the temp dir, on free
  loopback ports, `log.level = "warning"`, an agent owning `*@bench.test` created through the
  CLI (its API key is kept for the time-to-ready and download measurements).
* `smtp-sink`: Postfix's test sink, `smtp-sink -u nobody 127.0.0.1:PORT 1024` (the Postfix MTA
  itself is never started).
* `postfix-queue`: a private Postfix with its real durable queue (fsync before 250) and a
  discard transport, `../shared/bench/postfix_queue.sh` (issue 24's peer to beat); its master
  forks into the background, so it is stopped by the script and sampled from the master's pid.
* `aiosmtpd`: `bench/sink_aiosmtpd.py`, stock aiosmtpd answering 250 to everything.

Every target is stopped by signalling its own process group (SIGTERM, then SIGKILL after a
deadline); nothing is ever killed by name. `TreeSampler` samples RSS and CPU of a target's whole
process tree with psutil (the CPU of descendants that have exited and been reaped too).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
BENCH_DOMAIN = "bench.test"
TARGETS = ("postroom", "postfix-queue", "smtp-sink", "aiosmtpd")
# The peer as shared/bench defines it (beside the clone, as on CI): one script, not a copy.
POSTFIX_QUEUE = REPO.parent / "shared" / "bench" / "postfix_queue.sh"
# postroom runs on the interpreter of a deployment-like venv (bench/setup.sh makes it: the
# project and its `fast` extra, no test tools); the test venv's own when there is none.
_DEPLOYED = REPO / ".venv-bench" / "bin" / "python"
POSTROOM_PYTHON = str(_DEPLOYED) if _DEPLOYED.exists() else sys.executable


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def nice_prefix(level: int) -> list[str]:
    """`nice -n LEVEL` when asked for and allowed (a negative level needs root)."""
    if level == 0 or (level < 0 and os.geteuid() != 0):
        return []
    return ["nice", "-n", str(level)]


@dataclass
class Running:
    """A started target: how to reach it and how to stop it."""

    name: str
    proc: subprocess.Popen[bytes]
    root: Path
    smtp_port: int
    http_port: int = 0
    api_key: str = ""
    log_files: list[IO[bytes]] = field(default_factory=list)
    exit_code: int | None = None
    # A target that forks into the background: the pid to sample and how to stop it.
    daemon_pid: int | None = None
    stop_argv: list[str] | None = None

    @property
    def pid(self) -> int:
        return self.daemon_pid or self.proc.pid

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def log_tail(self, lines: int = 30) -> list[str]:
        """The last lines of the target's stdout and stderr (for findings)."""
        out: list[str] = []
        for name in ("stdout.log", "stderr.log"):
            path = self.root / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()
                out += [f"{name}: {line}" for line in text[-lines:]]
        return out

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the target's own process group; SIGKILL it if it has not left in time."""
        if self.stop_argv is not None:
            return self._stop_daemon(timeout)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.exit_code = self.proc.returncode
        for fh in self.log_files:
            fh.close()
        return self.exit_code

    def _stop_daemon(self, timeout: float) -> int | None:
        assert self.stop_argv is not None
        subprocess.run(self.stop_argv, check=False, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while self.daemon_pid and psutil.pid_exists(self.daemon_pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.daemon_pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        self.proc.wait(10)
        for fh in self.log_files:
            fh.close()
        self.exit_code = 0
        return self.exit_code


def _spawn(name: str, cmd: list[str], root: Path, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> tuple[subprocess.Popen[bytes], list[IO[bytes]]]:
    out = open(root / "stdout.log", "wb")  # noqa: SIM115 - closed by Running.stop
    err = open(root / "stderr.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=cwd or root, env=env, stdout=out, stderr=err,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, [out, err]


def wait_smtp_banner(port: int, proc: subprocess.Popen[bytes] | None,
                     timeout: float = 60.0) -> None:
    """Wait until the port answers with a 220 banner (and say QUIT)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:  # None: a daemon, already gone
            raise RuntimeError(f"target exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                banner = s.recv(512)
                if banner.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    with contextlib.suppress(OSError):
                        s.recv(512)
                    return
                last = banner
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"no SMTP banner on port {port}: {last!r}")


def start_smtp_sink(root: Path, nice: int) -> Running:
    exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.path.exists(exe):
        raise RuntimeError("smtp-sink not found: apt-get install postfix (No configuration)")
    port = free_port()
    return _start_sink("smtp-sink", [*nice_prefix(nice), exe, "-u", "nobody",
                                     f"{HOST}:{port}", "1024"], root, port)


def start_postfix_queue(root: Path, nice: int) -> Running:
    """Postfix with its real queue in `root` (`POSTFIX_QUEUE`), answering on a free
    port; the run's pid is its master's."""
    if shutil.which("postfix") is None and not os.path.exists("/usr/sbin/postfix"):
        raise RuntimeError("postfix not found: bash bench/setup.sh")
    if not POSTFIX_QUEUE.exists():
        raise RuntimeError(f"{POSTFIX_QUEUE} not found: the shared folder beside the clone")
    os.chmod(root, 0o711)  # Postfix's daemons run as `postfix` and open files under root
    port = free_port()
    proc, logs = _spawn("postfix-queue", [*nice_prefix(nice), "bash", str(POSTFIX_QUEUE),
                                          "start", str(root / "pf"), str(port)], root)
    run = Running("postfix-queue", proc, root, port, log_files=logs,
                  stop_argv=["bash", str(POSTFIX_QUEUE), "stop", str(root / "pf")])
    try:
        if proc.wait(60) != 0:
            raise RuntimeError("postfix_queue.sh failed: " + " | ".join(run.log_tail()))
        run.daemon_pid = int((root / "pf" / "queue" / "pid" / "master.pid").read_text())
        wait_smtp_banner(port, None)
    except Exception:
        run.stop()
        raise
    return run


def start_aiosmtpd(root: Path, nice: int) -> Running:
    port = free_port()
    return _start_sink("aiosmtpd", [*nice_prefix(nice), sys.executable, "-m",
                                    "bench.sink_aiosmtpd", "--port", str(port)],
                       root, port, cwd=REPO)


def _start_sink(name: str, argv: list[str], root: Path, port: int,
                cwd: Path | None = None) -> Running:
    """Start a peer sink and wait for its banner; stop it again if it never greets."""
    proc, logs = _spawn(name, argv, root, cwd=cwd)
    run = Running(name, proc, root, port, log_files=logs)
    try:
        wait_smtp_banner(port, proc)
    except Exception:
        run.stop()
        raise
    return run


POSTROOM_CONFIG = """\
# Written by bench/targets.py: postroom's embedded defaults (SQLite + local store in this
# folder) on free loopback ports, logging at warning so it stays off the hot path.
[smtp]
listen = "{host}:{smtp_port}"
hostname = "postroom.bench.test"

[http]
listen = "{host}:{http_port}"
public_url = "http://{host}:{http_port}"

[log]
format = "json"
level = "warning"
"""


def postroom_env(src: Path) -> dict[str, str]:
    """The environment that makes `python -m daemon` import postroom from `src`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("POSTROOM_CONFIG", None)
    for key in list(env):
        if key.startswith("POSTROOM_"):
            env.pop(key)
    env["PYTHONPATH"] = str(src)
    return env


def postroom_cli(root: Path, src: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POSTROOM_PYTHON, "-m", "daemon", *args, "--config",
                           str(root / "config.toml")], cwd=root, env=postroom_env(src),
                          capture_output=True, text=True, timeout=120, check=True)


def rcpt_code(port: int, address: str) -> int:
    with smtplib.SMTP(HOST, port, timeout=10) as s:
        s.ehlo("probe.bench.test")
        s.mail("probe@sender.test")
        return int(s.rcpt(address)[0])


def start_postroom(root: Path, nice: int, src: Path, timeout: float = 60.0,
                   extra_config: str = "") -> Running:
    """postroom from `src`; `extra_config` is TOML appended to the bench's config (A/B runs)."""
    smtp_port, http_port = free_port(), free_port()
    (root / "config.toml").write_text(POSTROOM_CONFIG.format(
        host=HOST, smtp_port=smtp_port, http_port=http_port) + extra_config)
    proc, logs = _spawn("postroom", [*nice_prefix(nice), POSTROOM_PYTHON, "-m", "daemon", "serve",
                                     "--config", str(root / "config.toml")],
                        root, env=postroom_env(src))
    run = Running("postroom", proc, root, smtp_port, http_port, log_files=logs)
    try:
        wait_smtp_banner(smtp_port, proc, timeout)
        deadline = time.monotonic() + timeout
        import httpx
        while True:  # the HTTP side answers /readyz once the database and the store do
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{run.http_url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("postroom never became ready: " + " | ".join(run.log_tail()))
            time.sleep(0.1)
        out = postroom_cli(root, src, "agent", "add", "bench", "--address",
                           f"*@{BENCH_DOMAIN}", "--json")
        run.api_key = json.loads(out.stdout)["api_key"]
        while rcpt_code(smtp_port, f"probe@{BENCH_DOMAIN}") != 250:
            if time.monotonic() > deadline:
                raise RuntimeError("postroom never accepted RCPT for the bench agent")
            time.sleep(0.1)
    except Exception:
        run.stop()
        raise
    return run


def start_target(name: str, nice: int, postroom_src: Path) -> Running:
    """Start `name` in a fresh temp dir (removed by `cleanup`)."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        if name == "postroom":
            return start_postroom(root, nice, postroom_src)
        if name == "smtp-sink":
            return start_smtp_sink(root, nice)
        if name == "postfix-queue":
            return start_postfix_queue(root, nice)
        if name == "aiosmtpd":
            return start_aiosmtpd(root, nice)
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    raise ValueError(f"unknown target {name}")


_TRASH: list[Path] = []


def cleanup(run: Running) -> None:
    """Give back the run's disk space now and its inodes when the benchmark ends.

    The files are truncated, not removed: this machine's root filesystem is ext4 without a
    journal, where the inode allocator skips every inode freed in the last 30 s one by one
    (`recently_deleted`), so creating a file right after removing 5,000 cost 0.9 ms of kernel
    time instead of 0.15 ms (notes item 12). Removing a run's thousands of files before the
    next run made that next postroom run pay for the benchmark's own cleanup.
    """
    for folder, _dirs, files in os.walk(run.root):
        for name in files:
            with contextlib.suppress(OSError):
                os.truncate(os.path.join(folder, name), 0)
    _TRASH.append(run.root)


@atexit.register
def empty_trash() -> None:
    """Remove the folders of every finished run (at exit, or between phases)."""
    while _TRASH:
        shutil.rmtree(_TRASH.pop(), ignore_errors=True)


def wait_tree_quiet(sampler: TreeSampler, max_wait: float, threshold_s: float = 0.05) -> float:
    """Wait until a target's tree uses under `threshold_s` CPU seconds in 0.5 s (postroom's
    pipeline has drained); the seconds waited."""
    t0 = time.monotonic()
    last = sampler.cpu_s()
    while time.monotonic() - t0 < max_wait:
        time.sleep(0.5)
        now = sampler.cpu_s()
        if now - last < threshold_s:
            break
        last = now
    return time.monotonic() - t0


class TreeSampler(threading.Thread):
    """Samples RSS (summed over a process and its descendants) every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.samples = 0
        self._halt = threading.Event()

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += p.memory_info().rss
        return total

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                # children_*: descendants that exited and were waited for (a content worker
                # that went idle, a Postfix smtpd past its max_use), gone from the tree.
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_rss = max(self.peak_rss, self.rss())
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        if self.is_alive():
            self.join()
        self.peak_rss = max(self.peak_rss, self.rss())
        return self.peak_rss


def busy_cpu_s() -> float:
    """Machine-wide CPU seconds this guest spent working since boot (all cores): user, nice,
    system, irq, softirq. Not idle/iowait, not steal (the hypervisor's), and not guest time,
    which Linux already counts in user."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0)
                 + getattr(t, "softirq", 0.0))


def steal_cpu_s() -> float:
    """CPU seconds the hypervisor took from this VM since boot (all cores)."""
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def own_cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def wait_quiet(max_wait: float, threshold_pct: float) -> tuple[float, float]:
    """Wait until the machine is idle-ish: under `threshold_pct` of one core busy for two 0.5 s
    windows in a row, or `max_wait` seconds. Returns (seconds waited, last busy % seen)."""
    t0 = time.monotonic()
    quiet = 0
    pct = 0.0
    while time.monotonic() - t0 < max_wait:
        b0, w0 = busy_cpu_s(), time.monotonic()
        time.sleep(0.5)
        pct = 100 * (busy_cpu_s() - b0) / (time.monotonic() - w0)
        quiet = quiet + 1 if pct < threshold_pct else 0
        if quiet >= 2:
            break
    return time.monotonic() - t0, pct


def tool_versions() -> dict[str, Any]:
    """Versions of what the benchmark depends on, for the report."""
    from importlib import metadata
    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for pkg in ("aiosmtpd", "uvloop", "httpx", "psutil", "py-spy", "sqlalchemy", "aiosqlite",
                "uvicorn", "fastapi"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        dpkg = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "postfix"],
                              capture_output=True, text=True, timeout=10)
        if dpkg.returncode == 0:
            out["postfix"] = dpkg.stdout.strip()
    return out


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Add one run's record to a results file (JSON lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
