"""SMTP AUTH passwords: `smtp.auth_users` holds scrypt hashes, never the passwords themselves.

A hash is one self-describing line, `scrypt$n=16384,r=8,p=1$<salt b64>$<hash b64>`. Checking
compares in constant time and spends the same scrypt work on an unknown user as on a known
one. Nothing here logs; a caller logging a failure must leave out the user name it was given.

`python -m daemon.passwords hash` reads a password (stdin, or a prompt without echo on a
terminal) and prints its hash line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

N, R, P = 16384, 8, 1  # 16 MiB and ~50 ms per check: cheap for a relay, dear for a guesser
SALT_BYTES = 16
HASH_BYTES = 32
MAX_MEMORY = 256 * 1024**2  # refuse hashes whose parameters would need more than this
_B64 = r"([A-Za-z0-9+/]+={0,2})"
_FORMAT = re.compile(rf"scrypt\$n=(\d+),r=(\d+),p=(\d+)\${_B64}\${_B64}")


@dataclass(frozen=True)
class PasswordHash:
    """A parsed hash line."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def matches(self, password: bytes) -> bool:
        """True when `password` hashes to this digest (compared in constant time)."""
        derived = _scrypt(password, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(derived, self.digest)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, size: int) -> bytes:
    # OpenSSL refuses above 32 MiB unless told the bound; the parameters were bounded on parse.
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=size,
                          maxmem=_memory(n, r, p) + 65536)


def _memory(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str | bytes, *, n: int = N, r: int = R, p: int = P) -> str:
    """The hash line for `password`, with a fresh random salt."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(secret, salt, n, r, p, HASH_BYTES)
    return f"scrypt$n={n},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def parse_hash(text: str) -> PasswordHash:
    """Parse a hash line; ValueError (saying what is wrong, never echoing it) otherwise."""
    m = _FORMAT.fullmatch(text.strip())
    if m is None:
        raise ValueError("not a password hash of the form scrypt$n=…,r=…,p=…$<salt>$<hash> "
                         "(make one with `python -m daemon.passwords hash`)")
    n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 \
            or _memory(n, r, p) > MAX_MEMORY:
        raise ValueError("scrypt parameters out of range (n a power of two, r ≤ 64, p ≤ 16, "
                         f"at most {MAX_MEMORY // 1024**2} MiB)")
    try:
        salt = base64.b64decode(m.group(4), validate=True)
        digest = base64.b64decode(m.group(5), validate=True)
    except binascii.Error:
        raise ValueError("salt or hash is not valid base64") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("salt or hash too short")
    return PasswordHash(n, r, p, salt, digest)


class AuthUsers:
    """The relays that may authenticate: user name → parsed hash."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {name: parse_hash(line) for name, line in users.items()}
        # Checked when the user is unknown, so a wrong name costs what a wrong password does.
        self._decoy = PasswordHash(N, R, P, b"\0" * SALT_BYTES, b"\0" * HASH_BYTES)

    def check(self, login: bytes, password: bytes) -> str | None:
        """The user name when `login` and `password` are right, else None. CPU-bound (scrypt):
        call it off the event loop."""
        try:
            name = login.decode("utf-8")
        except UnicodeDecodeError:
            name = None
        stored = self._users.get(name) if name is not None else None
        ok = (stored or self._decoy).matches(password)
        return name if ok and stored is not None else None


def _read_password(stdin_is_tty: bool) -> str:
    if stdin_is_tty:
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise ValueError("the passwords differ")
        return first
    text = sys.stdin.read()
    # One trailing line break is the terminator of `echo`/a file, not part of the password.
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def main(argv: Sequence[str] | None = None) -> int:
    """`hash`: read a password and print the line to put under [smtp.auth_users]."""
    parser = argparse.ArgumentParser(prog="python -m daemon.passwords",
                                     description="Hash passwords for smtp.auth_users.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash", help="read a password (stdin, or a prompt) and print its hash")
    parser.parse_args(argv)
    try:
        password = _read_password(sys.stdin.isatty())
    except (ValueError, EOFError, KeyboardInterrupt) as e:
        print(f"postroom: {e or 'no password given'}", file=sys.stderr)
        return 2
    if not password:
        print("postroom: the password is empty", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    sys.exit(main())
