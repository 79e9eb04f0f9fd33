"""The client's decryption (SPEC §8 `decrypt_with`): an agent's private key in a private,
temporary GnuPG home, used to open what the daemon stored encrypted.

The only place a private key is ever handled. Never modify the caller's GnuPG home (it is
copied), never let a pinentry ask, and leave no home or gpg-agent behind once closed.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import weakref
from pathlib import Path

from daemon.openpgp.errors import DecryptionFailed, DecryptorClosed, NoPrivateKey, OpenPgpError
from daemon.openpgp.keys import PRIVATE_ARMOR, parse_keys, read_key_file
from daemon.openpgp.runner import (
    COMMON_OPTIONS,
    RunResult,
    TimedGPG,
    gpgconf_next_to,
    readable_file,
    stop_agents,
    write_via_temp,
)

# The secret keys live in an agent of our own; loopback so that no pinentry ever pops up
# (without a passphrase gpg then fails at once instead of asking).
_DECRYPTOR_OPTIONS = (*COMMON_OPTIONS, "--pinentry-mode", "loopback")
# libgpg-error's code for a wrong passphrase.
_GPG_ERR_BAD_PASSPHRASE = 11


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


def _private_key_bytes(key: str | bytes | Path) -> bytes:
    if isinstance(key, Path):
        return read_key_file(key)
    data = key.encode() if isinstance(key, str) else bytes(key)
    if PRIVATE_ARMOR not in data:
        raise NoPrivateKey("an armored private key (-----BEGIN PGP PRIVATE KEY BLOCK-----), "
                           "a key file or a GnuPG home is expected")
    return data


def _check_decryption(outcome: RunResult, passphrase: str | None) -> None:
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
        raise DecryptionFailed("wrong_passphrase")
    if outcome.has("MISSING_PASSPHRASE") or (
            passphrase is None and outcome.has("NEED_PASSPHRASE")):
        raise DecryptionFailed("passphrase_needed")
    if outcome.has("NO_SECKEY") and not outcome.has("DECRYPTION_KEY"):
        raise DecryptionFailed("not_for_this_key")
    if not outcome.has("ENC_TO", "BEGIN_DECRYPTION"):
        raise DecryptionFailed("not_encrypted")
    raise DecryptionFailed("damaged")


def _remove_private_home(gpgconf: str, scratch: Path, home: Path, timeout: float) -> None:
    stop_agents(gpgconf, home, timeout)
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
        self._cleanup = weakref.finalize(self, _remove_private_home, gpgconf_next_to(binary),
                                         self._scratch, self._home, min(timeout, 10.0))
        try:
            if isinstance(key, Path) and key.is_dir():
                _copy_home(key, self._home)
                material = None
            else:
                material = _private_key_bytes(key)
                self._home.mkdir(mode=0o700)
            self._gpg = TimedGPG(self._home, binary=binary, timeout=timeout,
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
            raise NoPrivateKey("cannot import the private key: not an OpenPGP private key")
        if not secret_read:
            raise NoPrivateKey("no private key in the given key material")

    def _check_home_has_private_key(self) -> None:
        outcome = self._gpg.run(["--list-secret-keys"])
        if not any(key.primary.kind == "sec" for key in parse_keys(outcome.stdout)):
            raise NoPrivateKey("no private key in the GnuPG home")

    def close(self) -> None:
        """Stop the agent and remove the temporary home (idempotent)."""
        self._cleanup()

    def __enter__(self) -> Decryptor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def decrypt_bytes(self, data: bytes) -> bytes:
        """The plaintext of an OpenPGP message; DecryptionFailed when it cannot be decrypted."""
        self._check_open()
        outcome = self._gpg.run(["--decrypt"], stdin=data, passphrase=self._passphrase)
        _check_decryption(outcome, self._passphrase)
        return outcome.stdout

    def decrypt_file(self, src: Path, dest: Path) -> None:
        """Decrypt `src` into `dest`, gpg streaming file to file; `dest` appears complete or
        not at all."""
        self._check_open()
        source = readable_file(src)

        def decrypt(temp: Path) -> None:
            outcome = self._gpg.run(
                ["--decrypt", "--yes", "--output", str(temp.absolute()), "--", source],
                passphrase=self._passphrase)
            _check_decryption(outcome, self._passphrase)

        write_via_temp(dest, decrypt)

    def _check_open(self) -> None:
        if not self._cleanup.alive:
            raise DecryptorClosed("the decryptor is closed")
