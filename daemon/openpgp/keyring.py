"""The daemon's keyring of agents' public keys: import them, encrypt to them, check signatures.

The keyring holds public keys only, so it can encrypt and verify but never decrypt, and it
starts no gpg-agent. Files are encrypted by gpg itself, file to file, so large objects never
pass through Python. A "valid" signature always covers all of what the reader sees.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from daemon.openpgp.errors import GpgUnavailable, KeyRefused, RecipientRefused
from daemon.openpgp.keys import (
    FINGERPRINT,
    KeyInfo,
    agent_key,
    normalized_fingerprints,
    parse_keys,
    public_key_bytes,
)
from daemon.openpgp.runner import (
    COMMON_OPTIONS,
    RunResult,
    TimedGPG,
    readable_file,
    scratch_dir,
    write_via_temp,
)

# Encrypting, verifying and importing public keys needs no gpg-agent, and an agent per keyring
# would outlive the daemon's gpg runs.
_KEYRING_OPTIONS = (*COMMON_OPTIONS, "--no-autostart")
# ERRSIG's return code for "no public key".
_NO_PUBKEY = "9"


@dataclass(frozen=True)
class Verification:
    """The outcome of a signature check; `fingerprint` names the signing key when gpg does."""

    status: Literal["valid", "bad", "unknown_key"]
    fingerprint: str | None


@dataclass
class _Signature:
    outcome: Literal["good", "bad", "unknown_key"] | None = None
    fingerprint: str | None = None  # the primary key's, or the issuer's when that is all we have
    signing_key: str | None = None  # the (sub)key that made it, from VALIDSIG


def _signatures(outcome: RunResult) -> list[_Signature]:
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
            if len(args) >= 7 and FINGERPRINT.fullmatch(args[6]):
                signatures[-1].fingerprint = args[6]
        elif keyword == "VALIDSIG":
            signatures[-1].signing_key = args[0]
            signatures[-1].fingerprint = args[9] if len(args) >= 10 else args[0]
    return signatures


def _verification(outcome: RunResult, expected: Sequence[str] | None) -> Verification:
    signatures = _signatures(outcome)
    if not signatures:
        return Verification("bad", None)
    for signature in signatures:
        if signature.outcome in (None, "bad") or (
                signature.outcome == "good" and signature.signing_key is None):
            return Verification("bad", signature.fingerprint)
    good = [s for s in signatures if s.outcome == "good"]
    wanted = None if expected is None else set(normalized_fingerprints(expected))
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


def _prepare_home(home: Path) -> None:
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(home.stat().st_mode) != 0o700:
            home.chmod(0o700)
    except OSError as exc:
        raise GpgUnavailable(f"cannot prepare the GnuPG home {home}: {exc.strerror}") from None


def check_encryption(outcome: RunResult) -> None:
    for args in outcome.args("INV_RECP"):
        raise RecipientRefused(args[0] if args else None, args[1] if len(args) > 1 else None)
    if outcome.returncode != 0 or not outcome.has("END_ENCRYPTION"):
        raise GpgUnavailable(f"gpg could not encrypt{outcome.detail()}")


class Keyring:
    """The daemon's keyring of agents' public keys, in the GnuPG home `home`.

    Every method is synchronous and may run in several threads at once (asyncio.to_thread)."""

    def __init__(self, home: Path, *, timeout: float = 60.0, binary: str = "gpg") -> None:
        home = Path(home)
        _prepare_home(home)
        self._gpg = TimedGPG(home, binary=binary, timeout=timeout, options=_KEYRING_OPTIONS)

    def inspect_public_key(self, armored: bytes | str) -> KeyInfo:
        """What the armored public key is, without importing it; KeyRefused when it cannot be
        an agent's key (not a key, several keys, private material, binary, expired, revoked,
        nothing that can encrypt)."""
        info, _ = self._inspect(armored)
        return info

    def _inspect(self, armored: bytes | str) -> tuple[KeyInfo, bytes]:
        data = public_key_bytes(armored)
        with scratch_dir() as scratch:
            outcome = self._gpg.with_home(scratch).run(
                ["--with-subkey-fingerprint", "--import-options", "show-only", "--import"],
                stdin=data)
        return agent_key(parse_keys(outcome.stdout), datetime.now(UTC)), data

    def import_key(self, armored: bytes | str) -> str:
        """Import an agent's public key (checked as `inspect_public_key` does); its primary
        fingerprint. Importing the same key again changes nothing."""
        info, data = self._inspect(armored)
        outcome = self._gpg.run(["--import"], stdin=data)
        if any(info.fingerprint in args for args in outcome.args("IMPORT_OK")):
            return info.fingerprint
        if outcome.returncode == 0 or outcome.has("IMPORT_PROBLEM"):
            raise KeyRefused("not_imported")
        raise GpgUnavailable(f"gpg could not import the key{outcome.detail()}")

    def fingerprints(self) -> set[str]:
        """The primary fingerprints of the keys in the keyring."""
        outcome = self._gpg.run(["--list-keys"])
        if outcome.returncode != 0:
            raise GpgUnavailable(f"gpg could not list the keyring{outcome.detail()}")
        return {key.primary.fingerprint for key in parse_keys(outcome.stdout)}

    def encrypt_file(self, src: Path, dest: Path, recipients: Sequence[str]) -> None:
        """Encrypt `src` into `dest` as one armored message for every recipient (primary
        fingerprints of imported keys), gpg streaming file to file; RecipientRefused when a
        recipient cannot be used, GpgUnavailable when gpg fails. `dest` appears complete or
        not at all."""
        args = self._encryption_args(recipients)
        source = readable_file(src)

        def encrypt(temp: Path) -> None:
            check_encryption(self._gpg.run(
                [*args, "--yes", "--output", str(temp.absolute()), "--", source]))

        write_via_temp(dest, encrypt)

    def encrypt_bytes(self, data: bytes, recipients: Sequence[str]) -> bytes:
        """`data` as one armored message for every recipient (for small payloads: bodies)."""
        outcome = self._gpg.run(self._encryption_args(recipients), stdin=data)
        check_encryption(outcome)
        return outcome.stdout

    @staticmethod
    def _encryption_args(recipients: Sequence[str]) -> list[str]:
        if not recipients:
            raise ValueError("no recipients")
        args = ["--encrypt", "--armor", "--trust-model", "always", "--no-encrypt-to"]
        for fingerprint in normalized_fingerprints(recipients):
            args += ["--recipient", fingerprint]
        return args

    def verify_detached(self, content: bytes, signature: bytes,
                        expected: Sequence[str] | None = None) -> Verification:
        """Check a detached signature over `content`.

        "valid": a good signature by a key in the keyring (and, when `expected` fingerprints
        are given, primary or subkey, by one of them); "unknown_key": the signer is not in the
        keyring, or is not one of `expected`; "bad": the content does not match, the signature
        is malformed, or it is by an expired or revoked key."""
        with scratch_dir() as scratch:
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
