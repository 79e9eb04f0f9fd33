"""Running the machine's gpg, bounded in time, and the files it reads and writes.

Each run has a session (process group) of its own under a watchdog that kills the whole group
past the time limit; nothing is left running or half-written. Never log what gpg is given, nor
put it in an exception: it may be key material or plaintext.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import gnupg

from daemon.openpgp.errors import GpgTimedOut, GpgUnavailable

MIN_VERSION = (2, 2)
# Options of every run: never fetch keys from the network behind our back.
COMMON_OPTIONS = ("--no-auto-key-retrieve",)

_VERSION = re.compile(rb"gpg \(GnuPG[^)]*\) (\d+(?:\.\d+)+)")


class _Watchdog:
    """Kills a gpg process group that is still running `timeout` seconds after it started."""

    def __init__(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        self._process = process
        self._fired = False
        self._timer = threading.Timer(timeout, self._kill)
        self._timer.daemon = True
        self._timer.start()

    def _kill(self) -> None:
        if self._process.poll() is None:
            self._fired = True
            _kill_group(self._process)

    def stop(self) -> bool:
        """Disarm; True when the process had to be killed."""
        self._timer.cancel()
        return self._fired


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # gpg runs in a session of its own (start_new_session), so this reaches whatever it
    # started and left behind in the foreground too, and nothing of ours.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _start(cmd: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
    except OSError as exc:
        raise GpgUnavailable(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class RunResult:
    """What one gpg run said: exit code, stdout, its status lines, its last message."""

    returncode: int
    stdout: bytes
    status: tuple[tuple[str, tuple[str, ...]], ...]
    message: str

    @classmethod
    def parse(cls, returncode: int, stdout: bytes, stderr: bytes) -> RunResult:
        status: list[tuple[str, tuple[str, ...]]] = []
        message = ""
        for raw in stderr.splitlines():
            line = raw.decode("utf-8", "replace")
            words = line[9:].split()
            if line.startswith("[GNUPG:] ") and words:
                status.append((words[0], tuple(words[1:])))
            elif line.startswith("gpg: "):
                message = line[5:].strip()
        return cls(returncode, stdout, tuple(status), message)

    def has(self, *keywords: str) -> bool:
        """Whether any of the status `keywords` was said."""
        return any(keyword in keywords for keyword, _ in self.status)

    def args(self, keyword: str) -> list[tuple[str, ...]]:
        """The arguments of every status line with `keyword`, in order."""
        return [args for name, args in self.status if name == keyword]

    def detail(self) -> str:
        """" (exit 2: gpg's last message)", for an error that says how gpg failed."""
        return f" (exit {self.returncode}: {self.message})" if self.message else (
            f" (exit {self.returncode})")


def _finish(process: subprocess.Popen[bytes], watchdog: _Watchdog, stdin: bytes,
            timeout: float) -> RunResult:
    """Feed `stdin`, collect the output, and reap the process whatever happens."""
    try:
        stdout, stderr = process.communicate(stdin)
    finally:
        timed_out = watchdog.stop()
        if process.returncode is None:
            _kill_group(process)
            process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
    if timed_out:
        raise GpgTimedOut(f"gpg did not finish within {timeout:g} s")
    return RunResult.parse(process.returncode, stdout, stderr)


def run_command(cmd: Sequence[str], timeout: float) -> RunResult:
    """Run `cmd` (a gpg tool) with nothing on stdin, within `timeout` seconds."""
    process = _start(cmd)
    return _finish(process, _Watchdog(process, timeout), b"", timeout)


def gpg_version(binary: str = "gpg", timeout: float = 10) -> str:
    """The version of the GnuPG at `binary` ("2.2.40"); GpgUnavailable when missing or failing."""
    outcome = run_command([binary, "--version"], timeout)
    match = _VERSION.match(outcome.stdout)
    if outcome.returncode != 0 or not match:
        raise GpgUnavailable(f"{binary} --version did not answer as GnuPG{outcome.detail()}")
    return match.group(1).decode()


class TimedGPG(gnupg.GPG):  # type: ignore[misc]  # python-gnupg has no type information
    """python-gnupg's command line (home, batch, status on stderr, loopback passphrase) with
    every run in its own process group under a watchdog.

    We run gpg through `run` rather than python-gnupg's methods: those feed stdin from a thread
    that raises (and logs) a broken pipe whenever gpg stops reading early, have no time limit,
    and log the start of what they are given at debug level."""

    def __init__(self, home: Path, *, binary: str, timeout: float,
                 options: Sequence[str]) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._watchdogs: dict[int, _Watchdog] = {}
        # Ask first with a clear answer; python-gnupg's own check logs a traceback on failure.
        version = gpg_version(binary, timeout)
        if tuple(int(part) for part in version.split(".")[:2]) < MIN_VERSION:
            raise GpgUnavailable(f"{binary} is GnuPG {version}; 2.2 or later is needed")
        try:
            super().__init__(gpgbinary=binary, gnupghome=str(home), options=list(options))
        except (OSError, ValueError):
            raise GpgUnavailable(f"{binary} failed its start-up check") from None

    def with_home(self, home: Path) -> TimedGPG:
        """The same gpg on another home directory (a scratch keyring)."""
        twin = copy.copy(self)
        twin.gnupghome = str(home)
        return twin

    def _open_subprocess(self, args: list[str],
                         passphrase: bool = False) -> subprocess.Popen[bytes]:
        process = _start(self.make_args(args, passphrase), self.env)
        with self._lock:
            self._watchdogs[process.pid] = _Watchdog(process, self.timeout)
        return process

    def _collect_output(self, process: subprocess.Popen[bytes], result: object,
                        writer: object = None, stdin: object = None) -> int:
        # Only python-gnupg's start-up check comes this way.
        try:
            returncode: int = super()._collect_output(process, result, writer, stdin)
            return returncode
        finally:
            self._watchdog_of(process).stop()

    def _watchdog_of(self, process: subprocess.Popen[bytes]) -> _Watchdog:
        with self._lock:
            return self._watchdogs.pop(process.pid)

    def run(self, args: Sequence[str], *, stdin: bytes = b"",
            passphrase: str | None = None) -> RunResult:
        """Run gpg with `args`, `stdin` after the passphrase line, within the time limit."""
        process = self._open_subprocess(list(args), passphrase is not None)
        if passphrase is not None:
            stdin = passphrase.encode() + b"\n" + stdin
        return _finish(process, self._watchdog_of(process), stdin, self.timeout)


def gpgconf_next_to(binary: str) -> str:
    """The gpgconf beside the gpg at `binary`, else the one on the PATH."""
    found = shutil.which(binary)
    if found:
        candidate = Path(found).with_name("gpgconf")
        if candidate.is_file():
            return str(candidate)
    return "gpgconf"


def stop_agents(gpgconf: str, home: Path, timeout: float) -> None:
    """Stop the gpg-agent (and any other daemon) of `home`, if one runs; never raises."""
    with contextlib.suppress(GpgUnavailable):
        run_command([gpgconf, "--homedir", str(home), "--kill", "all"], timeout)


# -- files gpg reads and writes ----------------------------------------------------------------


def write_via_temp(dest: Path, produce: Callable[[Path], None]) -> None:
    """`produce` writes a temp file beside `dest`, which then becomes `dest`; on any failure
    the temp file is removed and `dest` left as it was."""
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    temp = Path(name)
    try:
        produce(temp)
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def readable_file(src: Path) -> str:
    """`src` as gpg should be given it; FileNotFoundError when it is not a file."""
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {src}")
    # Absolute, so that gpg can never read a name as an option.
    return str(src.absolute())


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A private temporary directory, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="pr-gpg-") as name:
        yield Path(name)
