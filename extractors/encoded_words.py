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
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r?\n")


def _decode_word(charset: str, encoding: str, text: str) -> str:
    charset = charset.split("*", 1)[0]  # RFC 2231 §5 adds an optional "*language"
    raw = text.encode("ascii", "ignore")
    if encoding in "bB":
        data, _ = decode_base64(raw)
    else:
        data = binascii.a2b_qp(raw, header=True)
    decoded, _ = decode_text(data, charset)
    return decoded


def decode_encoded_words(text: str) -> str:
    """Replace every RFC 2047 encoded word in text with its decoded characters."""
    if "=?" not in text:
        return text
    pieces: list[str] = []
    pos = 0
    previous_was_word = False
    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        # Whitespace between two adjacent encoded words is not part of the text (RFC 2047 §6.2).
        if not (previous_was_word and not gap.strip()):
            pieces.append(gap)
        pieces.append(_decode_word(*match.groups()))
        pos = match.end()
        previous_was_word = True
    pieces.append(text[pos:])
    return "".join(pieces)


def decode_header_text(raw: str) -> str:
    """Decode an unfolded header value held as Latin-1 text: 8-bit bytes, then RFC 2047 words."""
    if not raw.isascii():
        # The value is a byte-for-byte Latin-1 view; raw 8-bit headers are mostly UTF-8.
        raw, _ = decode_fallback(raw.encode("latin-1", "replace"))
    text = decode_encoded_words(raw)
    return scrub_surrogates(_FOLD.sub("", text)).strip()
