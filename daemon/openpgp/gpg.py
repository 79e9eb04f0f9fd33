"""OpenPGP over the machine's gpg (SPEC §8): agents' public keys, encryption at rest, signature
checks, and the client's decryption.

Every gpg run is bounded in time: past the limit its whole process group is killed. Files are
encrypted and decrypted by gpg itself, file to file, so large objects never pass through Python.
Never log key material or plaintext, nor put them in an exception; the daemon's keyring holds
public keys only and starts no gpg-agent.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import gnupg

from storage.errors import TransientError

MAX_KEY_BYTES = 1 << 20
MIN_VERSION = (2, 2)

_PUBLIC_ARMOR = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
_PRIVATE_ARMOR = b"-----BEGIN PGP PRIVATE KEY BLOCK-----"
_FINGERPRINT = re.compile(r"[0-9A-F]{40}")
_VERSION = re.compile(rb"gpg \(GnuPG[^)]*\) (\d+(?:\.\d+)+)")
# Options of every run: never fetch keys from the network behind our back.
_COMMON_OPTIONS = ("--no-auto-key-retrieve",)
# The daemon's keyring has public keys only: encrypting, verifying and importing them needs no
# gpg-agent, and an agent per keyring would outlive the daemon's gpg runs.
_DAEMON_OPTIONS = (*_COMMON_OPTIONS, "--no-autostart")
# The client's secret keys live in an agent of our own; loopback so that no pinentry ever pops
# up (without a passphrase gpg then fails at once instead of asking).
_DECRYPTOR_OPTIONS = (*_COMMON_OPTIONS, "--pinentry-mode", "loopback")
# INV_RECP reason codes (gnupg doc/DETAILS) a recipient can meet in practice.
_INVALID_RECIPIENT = {"1": "not in the keyring", "3": "has no encryption key",
                      "4": "is revoked", "5": "has expired", "13": "is disabled"}
# ERRSIG's return code for "no public key"; libgpg-error's code for a wrong passphrase.
_NO_PUBKEY = "9"
_GPG_ERR_BAD_PASSPHRASE = 11


class OpenPgpError(Exception):
    """Base of this module's errors (except `GpgUnavailable`, a transient storage error)."""


class KeyRefused(OpenPgpError):
    """A key that cannot serve as an agent's key; `str(e)` says why in one line."""


class GpgUnavailable(TransientError):
    """gpg is missing, failing, or past its time limit: the same call may succeed later."""


@dataclass(frozen=True)
class KeyInfo:
    """What an agent's public key is, as gpg reads it."""

    fingerprint: str
    user_ids: tuple[str, ...]
    algorithm: str
    created: datetime
    expires: datetime | None
    encryption_subkeys: tuple[str, ...]


@dataclass(frozen=True)
class Verification:
    """The outcome of a signature check; `fingerprint` names the signing key when gpg does."""

    status: Literal["valid", "bad", "unknown_key"]
    fingerprint: str | None


# -- processes ------------------------------------------------------------------------------


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
class _Outcome:
    """What one gpg run said: exit code, stdout, its status lines, its last message."""

    returncode: int
    stdout: bytes
    status: tuple[tuple[str, tuple[str, ...]], ...]
    message: str

    @classmethod
    def parse(cls, returncode: int, stdout: bytes, stderr: bytes) -> _Outcome:
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
        return any(keyword in keywords for keyword, _ in self.status)

    def args(self, keyword: str) -> list[tuple[str, ...]]:
        return [args for name, args in self.status if name == keyword]

    def detail(self) -> str:
        return f" (exit {self.returncode}: {self.message})" if self.message else (
            f" (exit {self.returncode})")


def _finish(process: subprocess.Popen[bytes], watchdog: _Watchdog, stdin: bytes,
            timeout: float) -> _Outcome:
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
        raise GpgUnavailable(f"gpg did not finish within {timeout:g} s")
    return _Outcome.parse(process.returncode, stdout, stderr)


def _run_command(cmd: Sequence[str], timeout: float) -> _Outcome:
    process = _start(cmd)
    return _finish(process, _Watchdog(process, timeout), b"", timeout)


def gpg_version(binary: str = "gpg", timeout: float = 10) -> str:
    """The version of the GnuPG at `binary` ("2.2.40"); GpgUnavailable when missing or failing."""
    outcome = _run_command([binary, "--version"], timeout)
    match = _VERSION.match(outcome.stdout)
    if outcome.returncode != 0 or not match:
        raise GpgUnavailable(f"{binary} --version did not answer as GnuPG{outcome.detail()}")
    return match.group(1).decode()


class _TimedGPG(gnupg.GPG):  # type: ignore[misc]  # python-gnupg has no type information
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

    def with_home(self, home: Path) -> _TimedGPG:
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
            passphrase: str | None = None) -> _Outcome:
        """Run gpg with `args`, `stdin` after the passphrase line, within the time limit."""
        process = self._open_subprocess(list(args), passphrase is not None)
        if passphrase is not None:
            stdin = passphrase.encode() + b"\n" + stdin
        return _finish(process, self._watchdog_of(process), stdin, self.timeout)


def _gpgconf_next_to(binary: str) -> str:
    found = shutil.which(binary)
    if found:
        candidate = Path(found).with_name("gpgconf")
        if candidate.is_file():
            return str(candidate)
    return "gpgconf"


def _stop_agents(gpgconf: str, home: Path, timeout: float) -> None:
    with contextlib.suppress(GpgUnavailable):
        _run_command([gpgconf, "--homedir", str(home), "--kill", "all"], timeout)


# -- files ----------------------------------------------------------------------------------


def _write_via_temp(dest: Path, produce: Callable[[Path], None]) -> None:
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


def _readable_file(src: Path) -> str:
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {src}")
    # Absolute, so that gpg can never read a name as an option.
    return str(src.absolute())


@contextlib.contextmanager
def _scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pr-gpg-") as name:
        yield Path(name)


# -- keys -----------------------------------------------------------------------------------


@dataclass
class _Record:
    """One pub/sec/sub/ssb line of gpg's colon listing, and the fpr line after it."""

    kind: str
    validity: str
    length: str
    algo: str
    created: datetime
    expires: datetime | None
    capabilities: str
    curve: str
    fingerprint: str = ""

    def can_encrypt(self, now: datetime) -> bool:
        return ("e" in self.capabilities and self.validity not in ("r", "e", "i", "d")
                and (self.expires is None or self.expires > now))


@dataclass
class _Key:
    primary: _Record
    subkeys: list[_Record] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)

    def records(self) -> list[_Record]:
        return [self.primary, *self.subkeys]


_ALGORITHMS = {"1": "rsa", "2": "rsa", "3": "rsa", "16": "elg", "17": "dsa", "20": "elg"}


def _timestamp(value: str) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value.isdigit() else None


def _unescape(value: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _parse_keys(listing: bytes) -> list[_Key]:
    """gpg's `--with-colons --fixed-list-mode` key listing (gnupg doc/DETAILS)."""
    keys: list[_Key] = []
    last: _Record | None = None
    for line in listing.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        fields += [""] * (20 - len(fields))
        kind = fields[0]
        if kind in ("pub", "sec", "sub", "ssb"):
            last = _Record(kind, fields[1], fields[2], fields[3],
                           _timestamp(fields[5]) or datetime.fromtimestamp(0, UTC),
                           _timestamp(fields[6]), fields[11], fields[16])
            if kind in ("pub", "sec"):
                keys.append(_Key(last))
            elif keys:
                keys[-1].subkeys.append(last)
        elif kind == "fpr" and last is not None and not last.fingerprint:
            last.fingerprint = fields[9].upper()
        elif kind == "uid" and keys and fields[1] not in ("r", "e", "i"):
            keys[-1].user_ids.append(_unescape(fields[9]))
    return keys


def _algorithm(record: _Record) -> str:
    if record.curve:
        return record.curve
    return f"{_ALGORITHMS.get(record.algo, 'algo' + record.algo)}{record.length}"


def _key_bytes(armored: bytes | str) -> bytes:
    """The armored public key to give gpg; KeyRefused for anything that plainly is not one."""
    data = armored.encode() if isinstance(armored, str) else bytes(armored)
    if len(data) > MAX_KEY_BYTES:
        raise KeyRefused(f"key larger than {MAX_KEY_BYTES // (1 << 20)} MiB")
    if _PRIVATE_ARMOR in data:
        raise KeyRefused("a private key: give the public key only")
    if _PUBLIC_ARMOR not in data:
        # A binary OpenPGP packet starts with its tag byte, whose high bit is set.
        if data[:1] and data[0] & 0x80:
            raise KeyRefused("armored key expected (this is binary)")
        raise KeyRefused("not an OpenPGP public key")
    return data


def _refusal(keys: list[_Key], now: datetime) -> str | None:
    """Why these keys cannot be an agent's key, or None when they are exactly one good key."""
    if not keys:
        return "not an OpenPGP public key"
    if any(record.kind in ("sec", "ssb") for key in keys for record in key.records()):
        return "a private key: give the public key only"
    if len(keys) > 1:
        return f"{len(keys)} keys: give exactly one public key"
    primary = keys[0].primary
    if primary.validity == "r":
        return "the key is revoked"
    if primary.validity == "e" or (primary.expires is not None and primary.expires <= now):
        return "the key has expired"
    if primary.validity in ("i", "d"):
        return "the key is invalid"
    if not any(record.can_encrypt(now) for record in keys[0].records()):
        return "no valid encryption key or subkey (a signing-only key?)"
    return None


def _fingerprints(values: Sequence[str]) -> list[str]:
    result = []
    for value in values:
        fingerprint = value.replace(" ", "").upper()
        if not _FINGERPRINT.fullmatch(fingerprint):
            raise OpenPgpError(f"not a key fingerprint: {value[:60]!r}")
        result.append(fingerprint)
    return result


# -- signatures -----------------------------------------------------------------------------


@dataclass
class _Signature:
    outcome: Literal["good", "bad", "unknown_key"] | None = None
    fingerprint: str | None = None  # the primary key's, or the issuer's when that is all we have
    signing_key: str | None = None  # the (sub)key that made it, from VALIDSIG


def _signatures(outcome: _Outcome) -> list[_Signature]:
    signatures: list[_Signature] = []
    for keyword, args in outcome.status:
        if keyword == "NEWSIG":
            signatures.append(_Signature())
        elif not signatures or not args:
            continue
        elif keyword == "KEY_CONSIDERED":
            signatures[-1].fingerprint = signatures[-1].fingerprint or args[0]
        elif keyword == "GOODSIG":
            signatures[-1].outcome = "good"
        elif keyword in ("BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"):
            signatures[-1].outcome = "bad"
        elif keyword == "ERRSIG" and len(args) >= 6:
            signatures[-1].outcome = "unknown_key" if args[5] == _NO_PUBKEY else "bad"
            if len(args) >= 7 and _FINGERPRINT.fullmatch(args[6]):
                signatures[-1].fingerprint = args[6]
        elif keyword == "VALIDSIG":
            signatures[-1].signing_key = args[0]
            signatures[-1].fingerprint = args[9] if len(args) >= 10 else args[0]
    return signatures


def _verification(outcome: _Outcome, expected: Sequence[str] | None) -> Verification:
    signatures = _signatures(outcome)
    if not signatures:
        return Verification("bad", None)
    for signature in signatures:
        if signature.outcome in (None, "bad") or (
                signature.outcome == "good" and signature.signing_key is None):
            return Verification("bad", signature.fingerprint)
    good = [s for s in signatures if s.outcome == "good"]
    wanted = None if expected is None else set(_fingerprints(expected))
    for signature in good:
        if wanted is None or {signature.fingerprint, signature.signing_key} & wanted:
            return Verification("valid", signature.fingerprint)
    return Verification("unknown_key", (good or signatures)[0].fingerprint)


def _is_one_clearsigned_block(data: bytes) -> bool:
    """Nothing outside a single clear-signed block: gpg would ignore text around it, and a
    "valid" must cover all of what the reader sees."""
    lines = [line.rstrip() for line in data.strip().splitlines()]
    return (len(lines) > 2 and lines[0] == b"-----BEGIN PGP SIGNED MESSAGE-----"
            and lines[-1] == b"-----END PGP SIGNATURE-----"
            and sum(line.startswith(b"-----BEGIN PGP ") for line in lines) == 2
            and sum(line.startswith(b"-----END PGP ") for line in lines) == 1)


# -- the daemon's keyring -------------------------------------------------------------------


def _prepare_home(home: Path) -> None:
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(home.stat().st_mode) != 0o700:
            home.chmod(0o700)
    except OSError as exc:
        raise GpgUnavailable(f"cannot prepare the GnuPG home {home}: {exc.strerror}") from None


def _check_encryption(outcome: _Outcome) -> None:
    for args in outcome.args("INV_RECP"):
        reason = _INVALID_RECIPIENT.get(args[0], "cannot be used") if args else "cannot be used"
        who = args[1] if len(args) > 1 else "a recipient"
        raise OpenPgpError(f"recipient {who} {reason}")
    if outcome.returncode != 0 or not outcome.has("END_ENCRYPTION"):
        raise GpgUnavailable(f"gpg could not encrypt{outcome.detail()}")


class Gpg:
    """The daemon's keyring of agents' public keys: import, encrypt to them, check signatures.

    Every method is synchronous and may run in several threads at once (asyncio.to_thread)."""

    def __init__(self, home: Path, *, timeout: float = 60.0, binary: str = "gpg") -> None:
        home = Path(home)
        _prepare_home(home)
        self._gpg = _TimedGPG(home, binary=binary, timeout=timeout,
                              options=_DAEMON_OPTIONS)

    def inspect_public_key(self, armored: bytes | str) -> KeyInfo:
        """What the armored public key is, without importing it; KeyRefused when it cannot be
        an agent's key (not a key, several keys, private material, binary, expired, revoked,
        nothing that can encrypt)."""
        info, _ = self._inspect(armored)
        return info

    def _inspect(self, armored: bytes | str) -> tuple[KeyInfo, bytes]:
        data = _key_bytes(armored)
        with _scratch_dir() as scratch:
            outcome = self._gpg.with_home(scratch).run(
                ["--with-subkey-fingerprint", "--import-options", "show-only", "--import"],
                stdin=data)
        keys = _parse_keys(outcome.stdout)
        now = datetime.now(UTC)
        reason = _refusal(keys, now)
        if reason:
            raise KeyRefused(reason)
        key = keys[0]
        return KeyInfo(
            fingerprint=key.primary.fingerprint,
            user_ids=tuple(key.user_ids),
            algorithm=_algorithm(key.primary),
            created=key.primary.created,
            expires=key.primary.expires,
            encryption_subkeys=tuple(r.fingerprint for r in key.records() if r.can_encrypt(now)),
        ), data

    def import_key(self, armored: bytes | str) -> str:
        """Import an agent's public key (checked as `inspect_public_key` does); its primary
        fingerprint. Importing the same key again changes nothing."""
        info, data = self._inspect(armored)
        outcome = self._gpg.run(["--import"], stdin=data)
        if any(info.fingerprint in args for args in outcome.args("IMPORT_OK")):
            return info.fingerprint
        if outcome.returncode == 0 or outcome.has("IMPORT_PROBLEM"):
            raise KeyRefused("gpg would not import the key")
        raise GpgUnavailable(f"gpg could not import the key{outcome.detail()}")

    def fingerprints(self) -> set[str]:
        """The primary fingerprints of the keys in the keyring."""
        outcome = self._gpg.run(["--list-keys"])
        if outcome.returncode != 0:
            raise GpgUnavailable(f"gpg could not list the keyring{outcome.detail()}")
        return {key.primary.fingerprint for key in _parse_keys(outcome.stdout)}

    def encrypt_file(self, src: Path, dest: Path, recipients: Sequence[str]) -> None:
        """Encrypt `src` into `dest` as one armored message for every recipient (primary
        fingerprints of imported keys), gpg streaming file to file; OpenPgpError when a
        recipient cannot be used, GpgUnavailable when gpg fails. `dest` appears complete or
        not at all."""
        args = self._encryption_args(recipients)
        source = _readable_file(src)

        def encrypt(temp: Path) -> None:
            _check_encryption(self._gpg.run(
                [*args, "--yes", "--output", str(temp.absolute()), "--", source]))

        _write_via_temp(dest, encrypt)

    def encrypt_bytes(self, data: bytes, recipients: Sequence[str]) -> bytes:
        """`data` as one armored message for every recipient (for small payloads: bodies)."""
        outcome = self._gpg.run(self._encryption_args(recipients), stdin=data)
        _check_encryption(outcome)
        return outcome.stdout

    @staticmethod
    def _encryption_args(recipients: Sequence[str]) -> list[str]:
        if not recipients:
            raise ValueError("no recipients")
        args = ["--encrypt", "--armor", "--trust-model", "always", "--no-encrypt-to"]
        for fingerprint in _fingerprints(recipients):
            args += ["--recipient", fingerprint]
        return args

    def verify_detached(self, content: bytes, signature: bytes,
                        expected: Sequence[str] | None = None) -> Verification:
        """Check a detached signature over `content`.

        "valid": a good signature by a key in the keyring (and, when `expected` fingerprints
        are given, primary or subkey, by one of them); "unknown_key": the signer is not in the
        keyring, or is not one of `expected`; "bad": the content does not match, the signature
        is malformed, or it is by an expired or revoked key."""
        with _scratch_dir() as scratch:
            path = scratch / "signature"
            path.write_bytes(signature)
            outcome = self._gpg.run(["--verify", "--", str(path), "-"], stdin=content)
        return _verification(outcome, expected)

    def verify_clearsigned(self, data: bytes,
                           expected: Sequence[str] | None = None) -> Verification:
        """Check a clear-signed message as `verify_detached` does; any text outside the one
        signed block makes it "bad"."""
        if not _is_one_clearsigned_block(data):
            return Verification("bad", None)
        return _verification(self._gpg.run(["--verify"], stdin=data), expected)


# -- the client's decryption ----------------------------------------------------------------


def _copy_home(src: Path, dest: Path) -> None:
    """Copy a GnuPG home without its agent's sockets or anyone's lock files."""

    def skipped(directory: str, names: list[str]) -> list[str]:
        skip = []
        for name in names:
            path = os.path.join(directory, name)
            try:
                mode = os.stat(path).st_mode
            except OSError:
                skip.append(name)
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) or name.endswith(".lock") or (
                    name.startswith(".#lk")):
                skip.append(name)
        return skip

    try:
        shutil.copytree(src, dest, ignore=skipped)
        dest.chmod(0o700)
    except (OSError, shutil.Error):
        raise OpenPgpError(f"cannot copy the GnuPG home {src}") from None


def read_key_file(path: Path) -> bytes:
    """A key file's bytes, at most MAX_KEY_BYTES; OpenPgpError saying why not."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise OpenPgpError(f"cannot read the key file {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_BYTES:
        raise OpenPgpError(f"key file larger than {MAX_KEY_BYTES // (1 << 20)} MiB: {path}")
    return data


def _private_key_bytes(key: str | bytes | Path) -> bytes:
    if isinstance(key, Path):
        return read_key_file(key)
    data = key.encode() if isinstance(key, str) else bytes(key)
    if _PRIVATE_ARMOR not in data:
        raise OpenPgpError("an armored private key (-----BEGIN PGP PRIVATE KEY BLOCK-----), "
                           "a key file or a GnuPG home is expected")
    return data


def _check_decryption(outcome: _Outcome, passphrase: str | None) -> None:
    # A signature inside the message that gpg cannot check makes its exit code non-zero;
    # the decryption itself is what DECRYPTION_OKAY vouches for.
    signature_trouble = outcome.has("ERRSIG", "BADSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG")
    if (outcome.has("DECRYPTION_OKAY") and not outcome.has("DECRYPTION_FAILED")
            and (outcome.returncode == 0 or signature_trouble)):
        return
    if outcome.has("BAD_PASSPHRASE") or any(
            len(args) > 1 and args[0] == "pkdecrypt_failed" and args[1].isdigit()
            and int(args[1]) & 0xFFFF == _GPG_ERR_BAD_PASSPHRASE
            for args in outcome.args("ERROR")):
        reason = "wrong passphrase for the private key"
    elif outcome.has("MISSING_PASSPHRASE") or (
            passphrase is None and outcome.has("NEED_PASSPHRASE")):
        reason = "the private key is protected: a passphrase is needed"
    elif outcome.has("NO_SECKEY") and not outcome.has("DECRYPTION_KEY"):
        reason = "the message is not encrypted to this key"
    elif not outcome.has("ENC_TO", "BEGIN_DECRYPTION"):
        reason = "not an OpenPGP encrypted message"
    else:
        reason = "the message is damaged"
    raise OpenPgpError(f"cannot decrypt: {reason}")


def _remove_private_home(gpgconf: str, scratch: Path, home: Path, timeout: float) -> None:
    _stop_agents(gpgconf, home, timeout)
    shutil.rmtree(scratch, ignore_errors=True)


class Decryptor:
    """Decrypts with a private key kept in a private, temporary GnuPG home (a context manager;
    the home and its gpg-agent are gone on exit).

    `key`: an armored private key (str or bytes), a Path to a file holding one, or a Path to an
    existing GnuPG home directory, which is copied first and never modified."""

    def __init__(self, key: str | bytes | Path, passphrase: str | None = None, *,
                 timeout: float = 60.0, binary: str = "gpg") -> None:
        if passphrase is not None and ("\n" in passphrase or "\r" in passphrase):
            raise ValueError("a passphrase cannot contain a line break")
        self._passphrase = passphrase
        # Short, under /tmp: the agent's socket path must fit in ~107 bytes.
        self._scratch = Path(tempfile.mkdtemp(prefix="pr-gpg-", dir="/tmp"))
        self._home = self._scratch / "h"
        self._cleanup = weakref.finalize(self, _remove_private_home, _gpgconf_next_to(binary),
                                         self._scratch, self._home, min(timeout, 10.0))
        try:
            if isinstance(key, Path) and key.is_dir():
                _copy_home(key, self._home)
                material = None
            else:
                material = _private_key_bytes(key)
                self._home.mkdir(mode=0o700)
            self._gpg = _TimedGPG(self._home, binary=binary, timeout=timeout,
                                  options=_DECRYPTOR_OPTIONS)
            if material is None:
                self._check_home_has_private_key()
            else:
                self._import(material)
        except BaseException:
            self.close()
            raise

    def _import(self, material: bytes) -> None:
        outcome = self._gpg.run(["--import"], stdin=material)
        counts = outcome.args("IMPORT_RES")
        secret_read = int(counts[-1][9]) if counts and len(counts[-1]) > 9 else 0
        if outcome.returncode != 0 and not secret_read:
            raise OpenPgpError("cannot import the private key: not an OpenPGP private key")
        if not secret_read:
            raise OpenPgpError("no private key in the given key material")

    def _check_home_has_private_key(self) -> None:
        outcome = self._gpg.run(["--list-secret-keys"])
        if not any(key.primary.kind == "sec" for key in _parse_keys(outcome.stdout)):
            raise OpenPgpError("no private key in the GnuPG home")

    def close(self) -> None:
        """Stop the agent and remove the temporary home (idempotent)."""
        self._cleanup()

    def __enter__(self) -> Decryptor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def decrypt_bytes(self, data: bytes) -> bytes:
        """The plaintext of an OpenPGP message; OpenPgpError when it cannot be decrypted."""
        self._check_open()
        outcome = self._gpg.run(["--decrypt"], stdin=data, passphrase=self._passphrase)
        _check_decryption(outcome, self._passphrase)
        return outcome.stdout

    def decrypt_file(self, src: Path, dest: Path) -> None:
        """Decrypt `src` into `dest`, gpg streaming file to file; `dest` appears complete or
        not at all."""
        self._check_open()
        source = _readable_file(src)

        def decrypt(temp: Path) -> None:
            outcome = self._gpg.run(
                ["--decrypt", "--yes", "--output", str(temp.absolute()), "--", source],
                passphrase=self._passphrase)
            _check_decryption(outcome, self._passphrase)

        _write_via_temp(dest, decrypt)

    def _check_open(self) -> None:
        if not self._cleanup.alive:
            raise OpenPgpError("the decryptor is closed")
