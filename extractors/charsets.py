"""Turning bytes in a declared charset into str, for bodies, file names and headers.

Mail declares charsets loosely (aliases, typos, "unknown-8bit", 8-bit text labelled us-ascii),
so every helper here returns text: the declared charset when it works, else UTF-8, else Latin-1,
with a defect saying which fallback was taken. Nothing here may raise on any input.
"""

from __future__ import annotations

import codecs
import re

# Names seen in real mail that Python's codec registry does not know.
_ALIASES = {
    "windows-874": "cp874",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
    "x-sjis": "shift_jis",
    "x-euc-jp": "euc_jp",
    "ks_c_5601": "euc_kr",
    "x-gbk": "gbk",
    "unicode": "utf-16",
    "utf8mb4": "utf-8",
}
# Names meaning "the sender did not know": treated as undeclared.
_UNDECLARED = {
    "",
    "unknown",
    "unknown-8bit",
    "x-unknown",
    "default",
    "charset",
    "us-ascii",
    "ascii",
}
# A charset name longer than this is garbage; looking it up would only cost time.
_MAX_CHARSET_NAME = 64
_DECODE_ERRORS = (LookupError, ValueError, TypeError)
_UTF8 = {"utf-8", "utf8"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize_charset(charset: str | None) -> str | None:
    """Return the declared charset lower-cased and unquoted, or None when absent or empty."""
    if charset is None:
        return None
    name = charset.strip().strip("\"'").strip().lower()
    return name or None


def find_codec(charset: str | None) -> str | None:
    """Return the Python codec name for a declared charset, or None when it is not a text codec."""
    name = normalize_charset(charset)
    if name is None or len(name) > _MAX_CHARSET_NAME or name in _UNDECLARED:
        return None
    name = _ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except _DECODE_ERRORS:  # LookupError, and ValueError for a NUL inside the name
        return None
    # base64, rot13, zlib … are registered codecs but not text encodings.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def is_unknown_charset(charset: str | None) -> bool:
    """True for a charset that was declared (not "unknown-8bit" and the like) but has no codec."""
    name = normalize_charset(charset)
    return name is not None and name not in _UNDECLARED and find_codec(name) is None


def scrub_surrogates(text: str) -> str:
    """Return text that encodes to UTF-8: lone surrogates (utf-7, surrogateescape) become U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def decode_fallback(data: bytes) -> tuple[str, bool]:
    """Decode as UTF-8, else Latin-1; the flag says whether Latin-1 was needed."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("latin-1"), True


def decode_text(data: bytes, charset: str | None) -> tuple[str, tuple[str, ...]]:
    """Decode bytes in their declared charset; never raises, defects name each fallback taken."""
    declared = normalize_charset(charset)
    if data.isascii() and (declared is None or declared in _UNDECLARED or declared in _UTF8):
        return data.decode("ascii"), ()
    codec = find_codec(declared)
    if codec is None:
        text, latin = decode_fallback(data)
        defects: list[str] = []
        if declared is not None and declared not in _UNDECLARED:
            defects.append(f"charset: unknown {declared[:_MAX_CHARSET_NAME]!r}")
        elif not data.isascii() and declared is not None:
            defects.append(f"charset: {declared} text has 8-bit bytes")
        if latin:
            defects.append("charset: decoded as latin-1")
        return scrub_surrogates(text), tuple(defects)
    try:
        return scrub_surrogates(data.decode(codec)), ()
    except _DECODE_ERRORS:
        pass
    try:
        text = data.decode(codec, "replace")
    except _DECODE_ERRORS:
        # A codec that fails even in replace mode (idna, undefined): fall back entirely.
        text, _ = decode_fallback(data)
        return scrub_surrogates(text), (f"charset: {codec} failed, decoded as utf-8/latin-1",)
    return scrub_surrogates(text), (f"charset: invalid {codec} bytes replaced",)
