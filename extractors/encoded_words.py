"""RFC 2047 encoded words (`=?utf-8?B?…?=`) in headers and, illegally but commonly, in names.

The pattern has no nested quantifiers and every repetition is bounded by a character that
ends it, so one pass over a 1 MB header line stays linear. A word that does not decode is
decoded as well as it can be (lenient base64, replaced bytes); nothing here may raise.
"""

from __future__ import annotations

import binascii
import re

from extractors.charsets import decode_fallback, decode_text, scrub_surrogates
from extractors.transfer import decode_base64

# charset[*language] ? B|Q ? text ?=   — the text may not hold "?", which keeps matching linear.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,64})\?([bBqQ])\?([^?]*)\?=")
_LINE_BREAK = re.compile(r"\r?\n")


def _word_bytes(encoding: str, text: str) -> bytes:
    raw = text.encode("ascii", "ignore")
    if encoding in "bB":
        return decode_base64(raw)[0]
    return binascii.a2b_qp(raw, header=True)


def _decode_run(run: bytearray, charset: str, defects: list[str] | None) -> str:
    text, found = decode_text(bytes(run), charset)
    if defects is not None:
        defects.extend(d for d in found if d not in defects)
    return text


def decode_encoded_words(text: str, defects: list[str] | None = None) -> str:
    """Replace every RFC 2047 encoded word in text with its decoded characters.

    Adjacent words in one charset are decoded together: many mailers split a multi-byte
    character across two words, which RFC 2047 forbids but readers accept. A word in an unknown
    charset is read as UTF-8, else Latin-1, and named in `defects` when a list is given.
    """
    if "=?" not in text:
        return text
    pieces: list[str] = []
    run = bytearray()  # bytes of adjacent words sharing run_charset, not yet decoded
    run_charset = ""
    pos = 0
    previous_was_word = False
    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        # RFC 2231 §5 lets a charset carry "*language"; it does not change the bytes.
        charset = match.group(1).split("*", 1)[0].lower()
        # Whitespace between two adjacent encoded words is not part of the text (RFC 2047 §6.2).
        adjacent = previous_was_word and not gap.strip()
        if run and (not adjacent or charset != run_charset):
            pieces.append(_decode_run(run, run_charset, defects))
            run.clear()
        if not adjacent:
            pieces.append(gap)
        run += _word_bytes(match.group(2), match.group(3))
        run_charset = charset
        pos = match.end()
        previous_was_word = True
    if run:
        pieces.append(_decode_run(run, run_charset, defects))
    pieces.append(text[pos:])
    return "".join(pieces)


def decode_header_text(raw: str, defects: list[str] | None = None) -> str:
    """Decode an unfolded header value held as Latin-1 text: 8-bit bytes, then RFC 2047 words;
    charset fallbacks are appended to `defects` when a list is given."""
    if not raw.isascii():
        # The value is a byte-for-byte Latin-1 view; raw 8-bit headers are mostly UTF-8.
        raw, latin = decode_fallback(raw.encode("latin-1", "replace"))
        if latin and defects is not None:
            defects.append("8-bit bytes that are not UTF-8 decoded as latin-1")
    text = decode_encoded_words(raw, defects)
    return scrub_surrogates(_LINE_BREAK.sub("", text)).strip()
