"""uuencoded files inside text: `begin <mode> <name>` … `end` blocks, found in one linear scan.

Pure and total: bytes in, (name, decoded bytes, defects) out. At most `_MAX_BLOCKS` blocks are
taken from one text, so a text of nothing but begin lines costs no more than its length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from extractors.charsets import decode_fallback
from extractors.transfer import decode_uuencode

_BEGIN = re.compile(rb"^begin(?:-base64)? +[0-7]{3,4} +([^\r\n]*?)[ \t]*\r?$", re.MULTILINE)
_END = re.compile(rb"^end[ \t]*\r?$", re.MULTILINE)
_MAX_BLOCKS = 1000


@dataclass(frozen=True)
class UuFile:
    """One uuencoded block: the name its begin line gives and its decoded bytes."""

    name: str
    data: bytes
    defects: tuple[str, ...] = ()


def uuencoded_files(text: bytes) -> list[UuFile]:
    """Every uuencoded block in `text`, in order; a block runs to its end line, the next begin
    line or the end of the text. Each regex search starts past the last, so the scan is linear."""
    found: list[UuFile] = []
    begin = _BEGIN.search(text)
    end = _END.search(text, begin.end()) if begin is not None else None
    while begin is not None and len(found) < _MAX_BLOCKS:
        following = _BEGIN.search(text, begin.end())
        if end is not None and end.start() < begin.end():
            end = _END.search(text, begin.end())  # only ever moves forward
        stop = len(text) if end is None else end.end()
        if following is not None and following.start() < stop:
            stop = following.start()
        if not begin.group(0).startswith(b"begin-base64"):  # a different format: not uuencode
            decoded = decode_uuencode(text[begin.start() : stop])
            name = decode_fallback(begin.group(1))[0].strip() or "uuencoded.bin"
            # Only blocks that decode to something are files; "begin 644 x" in prose is not.
            if decoded.data and decoded.failure is None:
                found.append(UuFile(name, decoded.data, decoded.defects))
        begin = following
    return found
