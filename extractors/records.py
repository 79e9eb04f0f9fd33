"""Frozen records that extraction hands to the daemon: limits in, parts and bodies out.

These cross the boundary between the pure core and the I/O shell, so they carry only plain
values (bytes, str, int, tuples). Nothing here may import from `daemon/` or `storage/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PartSource = Literal["mime", "uuencode", "tnef"]
PartOutcome = Literal["ok", "rejected", "failed"]
Security = Literal["encrypted", "signed"]
SignedKind = Literal["pgp-mime", "inline"]


@dataclass(frozen=True)
class Limits:
    """Bounds applied while walking one message (SPEC §3 `limits.*`)."""

    max_attachment_size: int = 40 * 1024 * 1024
    max_parts: int = 1000
    max_depth: int = 32


@dataclass(frozen=True)
class Encryption:
    """How ciphertext is encrypted as sent (SPEC §8 `encryption`)."""

    algorithm: str  # "openpgp" or "smime"
    format: str  # "armored" (ASCII armor) or "binary"


@dataclass(frozen=True)
class Body:
    """One body of the top message: the first text/plain or text/html that is not an attachment."""

    kind: Literal["text", "html"]
    content_type: str  # declared, lower-case "type/subtype"
    charset: str | None  # declared charset, lower-case, None when absent
    text: str  # transfer-decoded and charset-decoded; never raises on a bad charset
    size: int  # len(text.encode("utf-8"))
    path: str  # IMAP-style MIME part path: "1" for the first child, or for a single-part message
    defects: tuple[str, ...] = ()


@dataclass(frozen=True)
class Part:
    """One attachment-like leaf, in document order; `index` numbers them from 0."""

    index: int
    path: str  # IMAP-style MIME part path ("2", "2.1"); "1" when the message is a single part
    content_type: str  # declared, lower-case "type/subtype" (text/plain when absent)
    detected_content_type: str | None  # sniffed from the bytes, None when unknown
    content_type_mismatch: bool
    disposition: str | None  # "attachment", "inline" or None
    content_id: str | None  # without angle brackets
    file_name: str  # safe: no path, no control characters, at most 255 bytes of UTF-8
    original_file_name: str | None  # the decoded name as sent, None when the part had none
    data: bytes  # decoded bytes; the raw transfer bytes when outcome is "failed"
    size: int  # len(data)
    sha256: str  # hex digest of data
    parent: int | None = None  # index of the containing .eml / TNEF part, None at the top
    source: PartSource = "mime"
    encrypted: bool = False  # ciphertext as sent: a PGP/MIME payload, S/MIME enveloped data
    encryption: Encryption | None = None  # set exactly when `encrypted` is true
    outcome: PartOutcome = "ok"
    reason: str | None = None  # "too_large", "part_limit", "depth_limit" or a decode error
    defects: tuple[str, ...] = ()


@dataclass(frozen=True)
class Headers:
    """Headers of note of the top message, decoded to str (RFC 2047), None when absent."""

    from_: str | None = None
    to: str | None = None
    cc: str | None = None
    subject: str | None = None
    date: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None


@dataclass(frozen=True)
class Signed:
    """What an OpenPGP signature of the top message covers, ready to be verified elsewhere."""

    kind: SignedKind
    # "pgp-mime": the first part of the multipart/signed as it lies in the message, headers
    # included, every line ending made CRLF (RFC 3156 §5). "inline": the cleartext-signed block
    # of the text body, BEGIN to END line, as UTF-8; it holds its own signature.
    content: bytes
    signature: bytes | None  # "pgp-mime": the transfer-decoded second part; "inline": None
    signer: str | None  # the top From addr-spec, lower-case; None when absent or unparseable


@dataclass(frozen=True)
class ManifestEntry:
    """One entry of the X-AgentMail-Attachments header (SPEC §8), as the sender claims it."""

    file_name: str  # at most 255 characters
    content_type: str | None
    encrypted: bool | None  # None when absent or not a boolean
    encryption: Encryption | None


@dataclass(frozen=True)
class Extraction:
    """Everything extraction found in one message."""

    headers: Headers
    text_body: Body | None
    html_body: Body | None
    attachments: tuple[Part, ...]
    defects: tuple[str, ...] = field(default=())
    # What the top message says of itself (SPEC §8): "encrypted", "signed" or None.
    pgp: Security | None = None
    smime: Security | None = None
    signed: Signed | None = None  # what an OpenPGP signature of the top message covers
    # The X-AgentMail-Attachments header's entries; None when absent or unreadable.
    manifest: tuple[ManifestEntry, ...] | None = None
