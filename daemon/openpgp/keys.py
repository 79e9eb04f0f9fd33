"""Keys as gpg lists them: the colon listing parsed, the rules an agent's public key must meet,
fingerprints normalised, key files read within a bound.

Pure but for reading a key file: never runs gpg. Private material handed in as an agent's key
is refused here, before gpg ever sees it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from daemon.openpgp.errors import KeyRefused, NotAFingerprint, OpenPgpError

MAX_KEY_BYTES = 1 << 20

PUBLIC_ARMOR = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
PRIVATE_ARMOR = b"-----BEGIN PGP PRIVATE KEY BLOCK-----"
FINGERPRINT = re.compile(r"[0-9A-F]{40}")

_ALGORITHMS = {"1": "rsa", "2": "rsa", "3": "rsa", "16": "elg", "17": "dsa", "20": "elg"}


@dataclass(frozen=True)
class KeyInfo:
    """What an agent's public key is, as gpg reads it."""

    fingerprint: str
    user_ids: tuple[str, ...]
    algorithm: str
    created: datetime
    expires: datetime | None
    encryption_subkeys: tuple[str, ...]


@dataclass
class KeyRecord:
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
        """Whether this (sub)key may be encrypted to at `now`."""
        return ("e" in self.capabilities and self.validity not in ("r", "e", "i", "d")
                and (self.expires is None or self.expires > now))


@dataclass
class ListedKey:
    """A primary key of the listing with its subkeys and valid user ids."""

    primary: KeyRecord
    subkeys: list[KeyRecord] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)

    def records(self) -> list[KeyRecord]:
        return [self.primary, *self.subkeys]


def _timestamp(value: str) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value.isdigit() else None


def _unescape(value: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def parse_keys(listing: bytes) -> list[ListedKey]:
    """gpg's `--with-colons --fixed-list-mode` key listing (gnupg doc/DETAILS)."""
    keys: list[ListedKey] = []
    last: KeyRecord | None = None
    for line in listing.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        fields += [""] * (20 - len(fields))
        kind = fields[0]
        if kind in ("pub", "sec", "sub", "ssb"):
            last = KeyRecord(kind, fields[1], fields[2], fields[3],
                             _timestamp(fields[5]) or datetime.fromtimestamp(0, UTC),
                             _timestamp(fields[6]), fields[11], fields[16])
            if kind in ("pub", "sec"):
                keys.append(ListedKey(last))
            elif keys:
                keys[-1].subkeys.append(last)
        elif kind == "fpr" and last is not None and not last.fingerprint:
            last.fingerprint = fields[9].upper()
        elif kind == "uid" and keys and fields[1] not in ("r", "e", "i"):
            keys[-1].user_ids.append(_unescape(fields[9]))
    return keys


def _algorithm(record: KeyRecord) -> str:
    if record.curve:
        return record.curve
    return f"{_ALGORITHMS.get(record.algo, 'algo' + record.algo)}{record.length}"


def public_key_bytes(armored: bytes | str) -> bytes:
    """The armored public key to give gpg; KeyRefused for anything that plainly is not one."""
    data = armored.encode() if isinstance(armored, str) else bytes(armored)
    if len(data) > MAX_KEY_BYTES:
        raise KeyRefused("too_large", f"key larger than {MAX_KEY_BYTES // (1 << 20)} MiB")
    if PRIVATE_ARMOR in data:
        raise KeyRefused("private")
    if PUBLIC_ARMOR not in data:
        # A binary OpenPGP packet starts with its tag byte, whose high bit is set.
        if data[:1] and data[0] & 0x80:
            raise KeyRefused("binary")
        raise KeyRefused("not_a_key")
    return data


def agent_key(keys: list[ListedKey], now: datetime) -> KeyInfo:
    """The one key of a listing, when it can be an agent's key at `now`; KeyRefused saying
    which rule it breaks (none, several, private material, revoked, expired, invalid, nothing
    that can encrypt)."""
    if not keys:
        raise KeyRefused("not_a_key")
    if any(record.kind in ("sec", "ssb") for key in keys for record in key.records()):
        raise KeyRefused("private")
    if len(keys) > 1:
        raise KeyRefused("several_keys", f"{len(keys)} keys: give exactly one public key")
    key = keys[0]
    primary = key.primary
    if primary.validity == "r":
        raise KeyRefused("revoked")
    if primary.validity == "e" or (primary.expires is not None and primary.expires <= now):
        raise KeyRefused("expired")
    if primary.validity in ("i", "d"):
        raise KeyRefused("invalid")
    if not any(record.can_encrypt(now) for record in key.records()):
        raise KeyRefused("cannot_encrypt")
    return KeyInfo(
        fingerprint=primary.fingerprint,
        user_ids=tuple(key.user_ids),
        algorithm=_algorithm(primary),
        created=primary.created,
        expires=primary.expires,
        encryption_subkeys=tuple(r.fingerprint for r in key.records() if r.can_encrypt(now)),
    )


def normalized_fingerprints(values: Sequence[str]) -> list[str]:
    """Fingerprints in gpg's spelling (upper case, no spaces); NotAFingerprint for any other
    value, so that nothing else ever reaches gpg's command line as a key name."""
    result = []
    for value in values:
        fingerprint = value.replace(" ", "").upper()
        if not FINGERPRINT.fullmatch(fingerprint):
            raise NotAFingerprint(f"not a key fingerprint: {value[:60]!r}")
        result.append(fingerprint)
    return result


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
