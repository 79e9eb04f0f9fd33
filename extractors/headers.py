"""Splitting one header block (top message or MIME part) into unfolded fields.

Values are kept as a byte-for-byte Latin-1 view of what was sent, so 8-bit bytes survive until
a caller knows which charset to try. Lines are found with `bytes.find` and the block is walked
once, so a 1 MB header line or 100,000 header lines stay linear. Nothing here may raise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from extractors.encoded_words import decode_header_text
from extractors.records import Headers

# A field name is printable ASCII without ":"; old mailers put blanks before the colon.
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_ADDRESS_FIELDS = ("to", "cc")


@dataclass(frozen=True)
class HeaderBlock:
    """The fields of one header block and where its body starts in the buffer."""

    fields: tuple[tuple[str, str], ...]  # (lower-case name, unfolded Latin-1 view of the value)
    body_start: int
    defects: tuple[str, ...] = ()
    _first: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, value in self.fields:
            self._first.setdefault(name, value)

    def get(self, name: str) -> str | None:
        """Return the first value of a field (name in lower case), None when absent."""
        return self._first.get(name)

    def get_all(self, name: str) -> list[str]:
        """Return every value of a field, in order."""
        return [value for key, value in self.fields if key == name]


def _line_end(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Return (end of line content without CR/LF, start of next line)."""
    newline = buf.find(b"\n", pos, end)
    if newline < 0:
        return end, end
    content_end = newline - 1 if newline > pos and buf[newline - 1] == 0x0D else newline
    return content_end, newline + 1


def parse_header_block(buf: bytes, start: int, end: int, *, top: bool = False) -> HeaderBlock:
    """Parse the header block at buf[start:end]; the body starts after the first blank line."""
    fields: list[tuple[str, str]] = []
    defects: list[str] = []
    name: str | None = None
    chunks: list[bytes] = []
    pos = start
    if top and buf.startswith(b"From ", pos, end):
        pos = _line_end(buf, pos, end)[1]  # an mbox separator line, not a header
    body_start = end
    while pos < end:
        content_end, next_pos = _line_end(buf, pos, end)
        if content_end == pos:
            body_start = next_pos
            break
        first = buf[pos]
        if first in (0x20, 0x09):
            if name is None:
                defects.append("headers: first line is a continuation line")
            else:
                chunks.append(buf[pos:content_end])
            pos = next_pos
            continue
        match = _FIELD_NAME.match(buf, pos, content_end)
        if match is None:
            # Not a header: the body started without the blank line (or the part has no headers).
            defects.append(
                "headers: missing blank line before body" if fields or name else "headers: none"
            )
            body_start = pos
            break
        if name is not None:
            fields.append((name, b"".join(chunks).decode("latin-1").strip()))
        name = match.group(1).decode("ascii").lower()
        chunks = [buf[match.end() : content_end]]
        pos = next_pos
    if name is not None:
        fields.append((name, b"".join(chunks).decode("latin-1").strip()))
    return HeaderBlock(tuple(fields), body_start, tuple(defects))


def _decoded(block: HeaderBlock, name: str) -> str | None:
    if name in _ADDRESS_FIELDS:
        values = block.get_all(name)
        return ", ".join(decode_header_text(v) for v in values) if values else None
    value = block.get(name)
    return None if value is None else decode_header_text(value)


def message_headers(block: HeaderBlock) -> Headers:
    """Return the headers of note of a message, decoded to str."""
    return Headers(
        from_=_decoded(block, "from"),
        to=_decoded(block, "to"),
        cc=_decoded(block, "cc"),
        subject=_decoded(block, "subject"),
        date=_decoded(block, "date"),
        message_id=_decoded(block, "message-id"),
        in_reply_to=_decoded(block, "in-reply-to"),
        references=_decoded(block, "references"),
    )
