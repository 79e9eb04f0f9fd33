"""Structured header values: `type/subtype; name="value"; name*0*=utf-8''…` (RFC 2045, 2231).

Parameters are read left to right with bounded searches (each search stops at the next `;`,
`=` or quote), so a megabyte of parameters is one pass. Values keep the Latin-1 view of the
bytes sent; `param_text` turns one into text (RFC 2231, RFC 2047, raw 8-bit). Never raises.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from extractors.charsets import decode_text, find_codec, is_unknown_charset, scrub_surrogates
from extractors.encoded_words import decode_encoded_words

_NAME_END = re.compile(r"[=;]")
_QUOTED_END = re.compile(r'["\\]')
_COMMENT = re.compile(r"\([^()]*\)")
# "application/pdf name=a.pdf": a parameter sent without its ";" (each class stops the next).
_MISSING_SEMICOLON = re.compile(r"\s*([^\s=]+)\s+([^\s=]+\s*=.*)", re.DOTALL)
# RFC 2231 section numbers beyond this are garbage; int() of a huge digit string even raises.
_MAX_SECTION_DIGITS = 4


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted string whose opening quote is at pos - 1; return (value, position after)."""
    out: list[str] = []
    while True:
        match = _QUOTED_END.search(text, pos)
        if match is None:
            out.append(text[pos:])  # unterminated: the value runs to the end
            return "".join(out), len(text)
        out.append(text[pos : match.start()])
        if match.group() == '"':
            return "".join(out), match.end()
        following = text[match.end() : match.end() + 1]
        # RFC 822 makes every backslash quote the next character, but senders write Windows
        # paths ("C:\TEMP\a.png") unescaped; only \" and \\ are read as escapes, as the stdlib's
        # own unquote does, so such a path stays a path and the basename can be taken.
        out.append(following if following in ('"', "\\") else "\\" + following)
        pos = match.end() + 1


def parse_structured(text: str) -> tuple[str, dict[str, str], tuple[str, ...]]:
    """Split a structured value into its lower-case main value, its parameters and defects.

    Parameter names are lower-cased; the first occurrence of a name wins; an unquoted value
    runs to the next `;` (so `name=my file.pdf` keeps its spaces, as mail readers do).
    """
    main, _, rest = text.partition(";")
    defects: tuple[str, ...] = ()
    salvaged = _MISSING_SEMICOLON.fullmatch(main)
    if salvaged is not None:
        main, rest = salvaged.group(1), f"{salvaged.group(2)};{rest}"
        defects = ("parameters: missing ';' after the main value",)
    main = _COMMENT.sub("", main).strip().strip("\"'").strip().lower()
    params: dict[str, str] = {}
    pos, length = 0, len(rest)
    while pos < length:
        match = _NAME_END.search(rest, pos)
        if match is None:
            break
        name = rest[pos : match.start()].strip().lower()
        pos = match.end()
        if match.group() == ";":
            continue  # a parameter without "=": nothing to keep
        while pos < length and rest[pos] in " \t\r\n":
            pos += 1
        if pos < length and rest[pos] == '"':
            value, pos = _read_quoted(rest, pos + 1)
            semicolon = rest.find(";", pos)
            pos = length if semicolon < 0 else semicolon + 1
        else:
            semicolon = rest.find(";", pos)
            stop = length if semicolon < 0 else semicolon
            value = rest[pos:stop].strip()
            pos = stop + 1
        if name:
            params.setdefault(name, value)
    return main, params, defects


def _rfc2231_sections(params: dict[str, str], name: str) -> list[tuple[str, bool]] | None:
    """Return the (value, is_encoded) sections of `name*`, `name*0*`, `name*1`… in order."""
    if name + "*" in params:
        return [(params[name + "*"], True)]
    prefix = name + "*"
    sections: dict[int, tuple[str, bool]] = {}
    for key, value in params.items():
        if not key.startswith(prefix):
            continue
        suffix = key[len(prefix) :]
        digits = suffix.rstrip("*")
        if digits.isascii() and digits.isdigit() and len(digits) <= _MAX_SECTION_DIGITS:
            sections.setdefault(int(digits), (value, suffix.endswith("*")))
    if 0 not in sections:
        return None
    ordered = []
    for number in range(len(sections)):  # a gap ends the value, as RFC 2231 readers do
        if number not in sections:
            break
        ordered.append(sections[number])
    return ordered


def _decode_rfc2231(
    sections: list[tuple[str, bool]], fallback: str | None, defects: list[str] | None
) -> str:
    charset: str | None = None
    chunks: list[bytes] = []
    for number, (value, encoded) in enumerate(sections):
        if not encoded:
            chunks.append(value.encode("latin-1", "replace"))
            continue
        if number == 0 and value.count("'") >= 2:
            charset, _language, value = value.split("'", 2)
        chunks.append(unquote_to_bytes(value.encode("latin-1", "replace")))
    return decode_name_bytes(b"".join(chunks), charset or None, fallback, defects)


def decode_name_bytes(
    data: bytes, charset: str | None, fallback: str | None, defects: list[str] | None = None
) -> str:
    """Decode name bytes: the declared charset, else UTF-8, the part's charset, then Latin-1.

    An unknown declared charset, or bytes invalid in the declared one, is named in `defects`.
    """
    if charset is not None and find_codec(charset) is not None:
        text, found = decode_text(data, charset)
        if defects is not None:
            defects.extend(found)
        return text
    if defects is not None and charset is not None and is_unknown_charset(charset):
        defects.append(f"charset: unknown {charset[:64]!r}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    codec = find_codec(fallback)
    if codec is not None:
        try:
            return scrub_surrogates(data.decode(codec))
        except (UnicodeError, LookupError, ValueError):
            pass
    elif defects is not None and fallback is not None and is_unknown_charset(fallback):
        defects.append(f"charset: unknown {fallback[:64]!r}, decoded as latin-1")
    return data.decode("latin-1")


def param_text(
    params: dict[str, str], name: str, charset: str | None, defects: list[str] | None = None
) -> str | None:
    """Return a parameter decoded to text (RFC 2231 first, then plain), None when absent.

    `charset` is the part's own charset, tried for raw 8-bit values after UTF-8. Charsets that
    are unknown or do not fit the bytes are named in `defects` when a list is given.
    """
    sections = _rfc2231_sections(params, name)
    if sections is not None:
        text = _decode_rfc2231(sections, charset, defects)
    elif name in params:
        raw = params[name]
        if raw.isascii():
            text = raw
        else:
            text = decode_name_bytes(raw.encode("latin-1"), None, charset, defects)
    else:
        return None
    # Encoded words inside a parameter are illegal (RFC 2047 §5) but many mailers send them.
    return decode_encoded_words(text, defects)
