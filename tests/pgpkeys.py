"""Real OpenPGP keys for tests, made with the machine's gpg once per test session.

Each key lives in its own short GNUPGHOME under /tmp (its gpg-agent's socket must fit in ~107
bytes); at exit every such agent is stopped and every home removed. Keys have no passphrase
unless asked for, and are cached by their arguments since making one costs a gpg run or three.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

GPG = "gpg"
GPGCONF = "gpgconf"
# gpg 2.2's name for ed25519 (sign, certify) with a cv25519 (encrypt) subkey.
DEFAULT_ALGO = "future-default"
# Keys made "expired" are made on this day with a one-day lifetime.
_LONG_AGO = "20200101T000000"

_keys: dict[tuple[object, ...], TestKey] = {}
_homes: list[Path] = []


def _gpg(home: Path, *args: str, passphrase: str | None = None, input: bytes = b"") -> bytes:
    cmd = [GPG, "--homedir", str(home), "--batch", "--yes", "--pinentry-mode", "loopback",
           "--passphrase", passphrase or "", *args]
    done = subprocess.run(cmd, input=input, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


@dataclass(frozen=True)
class TestKey:
    """A key pair, armored both ways, with the home that holds it (for signing in tests)."""

    __test__ = False  # not a pytest test class

    uid: str
    fingerprint: str
    subkey_fingerprints: tuple[str, ...]
    public: str
    private: str
    home: Path
    passphrase: str | None

    def gpg(self, *args: str, input: bytes = b"") -> bytes:
        """Run gpg in this key's home (batch, loopback passphrase); its stdout."""
        return _gpg(self.home, *args, passphrase=self.passphrase, input=input)

    def sign_detached(self, data: bytes, *, armor: bool = True) -> bytes:
        armor_args = ["--armor"] if armor else []
        return self.gpg("--local-user", self.fingerprint, *armor_args, "--detach-sign",
                        input=data)

    def clearsign(self, text: bytes) -> bytes:
        return self.gpg("--local-user", self.fingerprint, "--clearsign", input=text)

    def encrypt_to_self(self, data: bytes) -> bytes:
        return self.gpg("--trust-model", "always", "--armor", "--encrypt", "--recipient",
                        self.fingerprint, input=data)

    def decrypt(self, data: bytes) -> bytes:
        return self.gpg("--decrypt", input=data)


def make_key(uid: str, *, algo: str = DEFAULT_ALGO, sign_only: bool = False,
             expired: bool = False, revoked: bool = False, passphrase: str | None = None,
             signing_subkey: bool = False) -> TestKey:
    """A key for `uid`, made once per session for each set of arguments.

    `sign_only`: no encryption subkey; `expired`: made in 2020, valid one day; `revoked`: its
    revocation certificate imported; `signing_subkey`: signatures are made by an ed25519
    subkey rather than the primary key."""
    cache_key = (uid, algo, sign_only, expired, revoked, passphrase, signing_subkey)
    if cache_key in _keys:
        return _keys[cache_key]
    home = Path(tempfile.mkdtemp(prefix="pr-k-", dir="/tmp"))
    _homes.append(home)
    # The agent's default protection of secret keys costs seconds here; tests need no strength.
    (home / "gpg-agent.conf").write_text("s2k-count 65536\n")
    faked = ["--faked-system-time", _LONG_AGO] if expired else []
    expire = "1d" if expired else "never"
    if algo in ("default", DEFAULT_ALGO) and not sign_only:
        _gpg(home, *faked, "--quick-gen-key", uid, algo, "default", expire, passphrase=passphrase)
    else:
        # A named algorithm makes a lone primary key: sign with it, encrypt with a subkey.
        primary = "ed25519" if algo in ("default", DEFAULT_ALGO) else algo
        _gpg(home, *faked, "--quick-gen-key", uid, primary, "sign", expire,
             passphrase=passphrase)
        if not sign_only:
            encryption = "cv25519" if primary == "ed25519" else primary
            _gpg(home, *faked, "--quick-add-key", _fingerprints(home)[0], encryption, "encr",
                 expire, passphrase=passphrase)
    fingerprint = _fingerprints(home)[0]
    if signing_subkey:
        _gpg(home, "--quick-add-key", fingerprint, "ed25519", "sign", "never",
             passphrase=passphrase)
    if revoked:
        # gpg writes the certificate with a ':' before the armor so that it is not imported by
        # accident.
        certificate = (home / "openpgp-revocs.d" / f"{fingerprint}.rev").read_bytes()
        _gpg(home, "--import", input=certificate.replace(b":-----BEGIN", b"-----BEGIN"))
    key = TestKey(
        uid=uid,
        fingerprint=fingerprint,
        subkey_fingerprints=tuple(_fingerprints(home)[1:]),
        public=_gpg(home, "--armor", "--export", fingerprint).decode(),
        private=_gpg(home, "--armor", "--export-secret-keys", fingerprint,
                     passphrase=passphrase).decode(),
        home=home,
        passphrase=passphrase,
    )
    _keys[cache_key] = key
    return key


def _fingerprints(home: Path) -> list[str]:
    listing = _gpg(home, "--with-colons", "--with-subkey-fingerprint", "--list-keys")
    return [line.split(":")[9] for line in listing.decode().splitlines()
            if line.startswith("fpr:")]


def stop_agent(home: Path) -> None:
    """Stop the gpg-agent (and any other gpg daemon) of `home`, if one runs."""
    subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"],
                   capture_output=True, timeout=30, check=False)


@atexit.register
def _remove_homes() -> None:
    for home in _homes:
        stop_agent(home)
        shutil.rmtree(home, ignore_errors=True)
