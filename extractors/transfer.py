"""Content-Transfer-Encoding decoding: 7bit/8bit/binary, base64, quoted-printable, uuencode.

Decoding is lenient the way mail readers are (garbage in base64 is skipped, padding is
repaired) and each repair is named in a defect. An encoding we do not know leaves the bytes
as sent with a failure reason. Nothing here may raise; base64 is one binascii call per part.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

# Misspellings seen in real mail whose meaning is not in doubt.
_IDENTITY = {"", "7bit", "8bit", "binary", "7-bit", "8-bit", "7bits", "8bits", "7", "8", "none"}
UUENCODE_ENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# bytes.translate(None, delete) with these leaves exactly the characters base64 must not hold.
_B64_ALLOWED = _B64_ALPHABET + b"= \t\r\n"
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET)
# "=" that starts neither a hex escape nor a soft line break (trailing blanks allowed).
_BAD_QP = re.compile(rb"=(?![0-9A-Fa-f]{2}|[ \t]*\r?\n|[ \t]*\Z)")


@dataclass(frozen=True)
class Decoded:
    """Result of transfer-decoding one part: the bytes, repairs made, or why it failed."""

    data: bytes
    defects: tuple[str, ...] = ()
    failure: str | None = None  # set when `data` is the raw transfer bytes, not decoded ones


def normalize_encoding(value: str | None) -> str:
    """Return the transfer encoding token lower-cased, without quotes or trailing junk."""
    if not value:
        return ""
    token = value.strip().strip("\"'").strip().lower()
    for stop in (";", " ", "\t", "("):
        token = token.split(stop, 1)[0]
    return token


def is_identity(encoding: str | None) -> bool:
    """True when the encoding leaves the bytes as they are (7bit, 8bit, binary or none)."""
    return normalize_encoding(encoding) in _IDENTITY


def _has_invalid_base64(data: bytes | memoryview, step: int = 1 << 20) -> bool:
    """Whether `data` holds bytes outside the alphabet and whitespace (a slice at a time, so a
    large part is never copied whole)."""
    view = memoryview(data)
    return any(bytes(view[i : i + step]).translate(None, _B64_ALLOWED)
               for i in range(0, len(view), step))


def decode_base64(data: bytes | memoryview) -> tuple[bytes, tuple[str, ...]]:
    """Decode base64 leniently: skip non-alphabet bytes, repair padding; never raises."""
    defects: list[str] = []
    if _has_invalid_base64(data):
        defects.append("base64: invalid characters ignored")
    try:
        return binascii.a2b_base64(data), tuple(defects)
    except binascii.Error:
        pass
    # Padding or length is wrong: keep only alphabet characters and make the length whole.
    chars = bytes(data).translate(None, _NOT_B64)
    extra = len(chars) % 4
    if extra == 1:
        # One stray character cannot carry a byte; stdlib and mail readers drop it too.
        chars = chars[:-1]
        defects.append("base64: invalid length, last character dropped")
    else:
        defects.append("base64: invalid padding")
    chars += b"=" * (-len(chars) % 4)
    try:
        return binascii.a2b_base64(chars), tuple(defects)
    except binascii.Error:  # not reachable with a clean, padded alphabet; kept as a guard
        return b"", (*defects, "base64: undecodable")


def decode_uuencode(data: bytes) -> Decoded:
    """Decode the first `begin … end` block of uuencoded lines; tolerant of bad lines."""
    lines = data.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(b"begin ")), None)
    if start is None:
        return Decoded(data, ("uuencode: no begin line",), failure="uuencode: no begin line")
    out = bytearray()
    defects: list[str] = []
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if stripped == b"end":
            break
        if not stripped or stripped == b"`":
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad lines with garbage; the length byte says how much is data.
            try:
                out += binascii.a2b_uu(line[: (((line[0] - 32) & 63) * 4 + 5) // 3])
            except (binascii.Error, IndexError):
                if not defects:
                    defects.append("uuencode: undecodable lines skipped")
    else:
        defects.append("uuencode: missing end line")
    return Decoded(bytes(out), tuple(defects))


def decode_transfer(data: bytes | memoryview, encoding: str | None) -> Decoded:
    """Undo the Content-Transfer-Encoding of one part's body bytes (a view of them will do:
    base64, the bulk of large mail, is decoded without copying the encoded text first)."""
    if is_identity(encoding):
        return Decoded(bytes(data))
    name = normalize_encoding(encoding)
    if name == "base64":
        decoded, defects = decode_base64(data)
        return Decoded(decoded, defects)
    if name in ("quoted-printable", "quoted_printable"):
        bad = _BAD_QP.search(data) is not None
        return Decoded(binascii.a2b_qp(data),
                       ("quoted-printable: invalid escapes kept as sent",) if bad else ())
    if name in UUENCODE_ENCODINGS:
        return decode_uuencode(bytes(data))
    reason = f"unknown transfer encoding {name[:40]!r}"
    return Decoded(bytes(data), (reason,), failure=reason)
