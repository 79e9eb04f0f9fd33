"""DKIM signing of outbound mail (SPEC §12 `[[outbound.dkim]]`) with dkimpy, before it is stored.

A key signs every message whose From domain is its `domain` (rsa-sha256 from a PEM RSA key,
ed25519-sha256 from dkimpy's base64 seed, which needs PyNaCl). Keys are read and tried once at
start, so a bad file stops `serve` instead of the first send. The key never reaches a log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dkim

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

# What a reader relies on; signed once more than present (From, Subject …) so that a header
# added later in transit cannot pass as signed (RFC 6376 §8.15, "oversigning").
SIGNED_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To",
                  "References", "Reply-To", "MIME-Version", "Content-Type",
                  "Content-Transfer-Encoding")
OVERSIGNED = ("From", "Subject", "Date", "To", "Cc", "Reply-To")


class DkimKeyError(ValueError):
    """A `[[outbound.dkim]]` key that cannot sign (the message names the file, not the key)."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: Algorithm
    private_key: bytes

    def __repr__(self) -> str:  # never the key itself
        return f"DkimKey({self.domain!r}, {self.selector!r}, {self.algorithm!r})"


_PROBE = (b"From: probe@example.invalid\r\nSubject: probe\r\nDate: Thu, 1 Jan 1970 00:00:00 +0000"
          b"\r\n\r\nprobe\r\n")


def load_key(domain: str, selector: str, key_file: Path, algorithm: Algorithm) -> DkimKey:
    """Read `key_file` and sign a probe with it; `DkimKeyError` naming the file otherwise."""
    try:
        data = key_file.read_bytes()
    except OSError as e:
        raise DkimKeyError(f"{key_file}: {e.strerror or e}") from e
    key = DkimKey(domain.lower().rstrip("."), selector, algorithm, data.strip() + b"\n"
                  if algorithm == "rsa-sha256" else data.strip())
    try:
        _signature(_PROBE, key)
    except (dkim.DKIMException, ValueError) as e:
        raise DkimKeyError(f"{key_file}: not a usable {algorithm} private key ({type(e).__name__})"
                           ) from e
    return key


def _signature(message: bytes, key: DkimKey) -> bytes:
    headers = [h.encode() for h in (*SIGNED_HEADERS, *OVERSIGNED)]
    return bytes(dkim.sign(message, key.selector.encode(), key.domain.encode(), key.private_key,
                           signature_algorithm=key.algorithm.encode(),
                           include_headers=headers, canonicalize=(b"relaxed", b"relaxed"),
                           linesep=b"\r\n"))


def sign(message: bytes, from_domain: str, keys: Sequence[DkimKey]) -> bytes:
    """`message` with one DKIM-Signature per key of `from_domain` prepended (none: unchanged)."""
    domain = from_domain.lower().rstrip(".")
    signatures = [_signature(message, k) for k in keys if k.domain == domain]
    return b"".join(signatures) + message
