"""The client's encryption (SPEC §12 `send_mail(encrypt_…=True)`): bodies and files encrypted to
peers' public keys from the directory, in a throwaway keyring made for one message.

The keys are checked as agents' keys are (one encryption-capable public key each) and trusted
for this one use only (always-trust: the directory vouches for them, no web of trust does).
Never reads or changes the caller's own GnuPG home, and leaves no home behind once closed.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

from daemon.openpgp.keyring import Keyring, check_encryption
from daemon.openpgp.runner import COMMON_OPTIONS, TimedGPG, readable_file, write_via_temp

# Encrypting to public keys needs no gpg-agent; one started here would outlive the keyring.
_OPTIONS = (*COMMON_OPTIONS, "--no-autostart")


class Encryptor:
    """Encrypts to a message's recipients (a context manager; the keyring is gone on exit).

    `recipients`: armored public keys whose key ids may show in the ciphertext (To and Cc);
    `hidden`: keys encrypted to with `--hidden-recipient`, so that the other readers cannot
    tell from the ciphertext who else can open it (Bcc). A key given in both is not hidden.
    KeyRefused when a key cannot be encrypted to (not a key, expired, revoked, signing only)."""

    def __init__(self, recipients: Sequence[str | bytes], hidden: Sequence[str | bytes] = (),
                 *, timeout: float = 60.0, binary: str = "gpg") -> None:
        if not recipients and not hidden:
            raise ValueError("no recipients")
        self._scratch = Path(tempfile.mkdtemp(prefix="pr-gpg-", dir="/tmp"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._scratch, True)
        try:
            home = self._scratch / "h"
            keyring = Keyring(home, timeout=timeout, binary=binary)
            shown = list(dict.fromkeys(keyring.import_key(key) for key in recipients))
            secret = [fp for fp in dict.fromkeys(keyring.import_key(key) for key in hidden)
                      if fp not in shown]
            self._gpg = TimedGPG(home, binary=binary, timeout=timeout, options=_OPTIONS)
        except BaseException:
            self.close()
            raise
        self._args = ["--encrypt", "--armor", "--trust-model", "always", "--no-encrypt-to"]
        for fingerprint in shown:
            self._args += ["--recipient", fingerprint]
        for fingerprint in secret:
            self._args += ["--hidden-recipient", fingerprint]
        self.fingerprints = tuple(shown + secret)

    def close(self) -> None:
        """Remove the throwaway keyring (idempotent)."""
        self._cleanup()

    def __enter__(self) -> Encryptor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def encrypt_bytes(self, data: bytes) -> bytes:
        """`data` as one armored OpenPGP message for every recipient (for bodies)."""
        outcome = self._gpg.run(self._args, stdin=data)
        check_encryption(outcome)
        return outcome.stdout

    def encrypt_file(self, src: Path, dest: Path) -> None:
        """Encrypt `src` into `dest` (armored), gpg streaming file to file; `dest` appears
        complete or not at all."""
        source = readable_file(src)

        def encrypt(temp: Path) -> None:
            check_encryption(self._gpg.run(
                [*self._args, "--yes", "--output", str(temp.absolute()), "--", source]))

        write_via_temp(dest, encrypt)
