"""Finding one header block (top message or MIME part) and the fields extraction reads from it.

The block's end and the wanted fields are found by compiled searches anchored on "\n", so a 1 MB
line or a million header lines stay linear and the per-line work happens in C. Values stay a
byte-for-byte Latin-1 view until a caller knows which charset to try. Never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from extractors.encoded_words import decode_header_text
from extractors.records import Headers

# The only fields extraction reads: MIME fields of every part, and the top message's own.
WANTED_FIELDS = (
    "content-type",
    "content-disposition",
    "content-transfer-encoding",
    "content-id",
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
)
_NAMES = b"|".join(re.escape(name.encode()) for name in WANTED_FIELDS)
_WANTED_FIRST = re.compile(rb"(" + _NAMES + rb")[ \t]*:", re.IGNORECASE)
_WANTED_NEXT = re.compile(rb"\n(" + _NAMES + rb")[ \t]*:", re.IGNORECASE)
# A header line starts with a field name (printable ASCII without ":"; old mailers put blanks
# before the colon) or with a blank (a folded continuation). Names are bounded, so a long line
# without a colon costs at most 998 steps of backtracking.
_FIELD_LINE = re.compile(rb"[!-9;-~]{1,998}[ \t]*:|[ \t]")
# The first line that is blank, or neither a field nor a continuation, ends the block.
_BLOCK_END = re.compile(rb"\n(?:\r?\n|(?![!-9;-~]{1,998}[ \t]*:|[ \t]))")
_VALUE_END = re.compile(rb"\n(?![ \t])")
_LINE_BREAK = re.compile(rb"\r?\n")
_ADDRESS_FIELDS = ("to", "cc")


@dataclass(frozen=True)
class HeaderBlock:
    """The wanted fields of one header block and where its body starts in the buffer."""

    fields: tuple[tuple[str, str], ...]  # (lower-case name, unfolded Latin-1 view of the value)
    body_start: int
    defects: tuple[str, ...] = ()

    def get(self, name: str) -> str | None:
        """Return the first value of a wanted field (name in lower case), None when absent."""
        return next((value for key, value in self.fields if key == name), None)

    def get_all(self, name: str) -> list[str]:
        """Return every value of a wanted field, in order."""
        return [value for key, value in self.fields if key == name]


def _is_blank_line(buf: bytes, pos: int, end: int) -> bool:
    return buf.startswith(b"\n", pos, end) or buf.startswith(b"\r\n", pos, end)


def _block_end(buf: bytes, pos: int, end: int) -> tuple[int, int, tuple[str, ...]]:
    """Return (end of the header lines, start of the body, defects) for a block at pos."""
    if pos >= end or _is_blank_line(buf, pos, end):
        return pos, min(buf.find(b"\n", pos, end) + 1 or end, end), ()
    if _FIELD_LINE.match(buf, pos, end) is None:
        return pos, pos, ("headers: none",)  # the part starts with its body
    defects: tuple[str, ...] = ()
    if buf[pos] in b" \t":
        defects = ("headers: first line is a continuation line",)
    found = _BLOCK_END.search(buf, pos, end)
    if found is None:
        return end, end, defects  # the headers run to the end: no body
    if found.end() - found.start() > 1 or found.end() == end:
        return found.start(), found.end(), defects  # a blank line, or the end of the buffer
    return found.start(), found.end(), (*defects, "headers: missing blank line before body")


def _value(buf: bytes, colon_end: int, block_end: int) -> str:
    stop = _VALUE_END.search(buf, colon_end, block_end)
    raw = buf[colon_end : block_end if stop is None else stop.start()]
    # Unfolding (RFC 5322 §2.2.3): the line breaks go, the blanks that follow them stay.
    return _LINE_BREAK.sub(b"", raw).decode("latin-1").strip()


def parse_header_block(buf: bytes, start: int, end: int, *, top: bool = False) -> HeaderBlock:
    """Parse the header block at buf[start:end]; the body starts after the first blank line."""
    pos = start
    if top and buf.startswith(b"From ", pos, end):
        newline = buf.find(b"\n", pos, end)
        pos = end if newline < 0 else newline + 1  # an mbox separator line, not a header
    block_end, body_start, defects = _block_end(buf, pos, end)
    while (top and body_start == block_end + 1 and buf.startswith(b"From ", body_start, end)
           and defects and defects[-1] == "headers: missing blank line before body"):
        # An mbox separator line among the headers (a relay's trace header was put in front of
        # it): skip it as the stdlib parser does, and go on with the headers after it.
        newline = buf.find(b"\n", body_start, end)
        if newline < 0:
            break
        more_end, body_start, more = _block_end(buf, newline + 1, end)
        if more == ("headers: none",):
            body_start = newline + 1
            block_end = newline
            defects = (*defects[:-1], "headers: misplaced mbox From line skipped",
                       "headers: missing blank line before body")
            break
        block_end = more_end
        defects = (*defects[:-1], "headers: misplaced mbox From line skipped", *more)
    fields: list[tuple[str, str]] = []
    if block_end > pos:
        first = _WANTED_FIRST.match(buf, pos, block_end)
        if first is not None:
            fields.append(
                (first.group(1).decode("ascii").lower(), _value(buf, first.end(), block_end))
            )
        for match in _WANTED_NEXT.finditer(buf, pos, block_end):
            fields.append(
                (match.group(1).decode("ascii").lower(), _value(buf, match.end(), block_end))
            )
    return HeaderBlock(tuple(fields), body_start, defects)


def _decoded(block: HeaderBlock, name: str, defects: list[str] | None) -> str | None:
    found: list[str] = []
    if name in _ADDRESS_FIELDS:
        values = block.get_all(name)
        text = ", ".join(decode_header_text(v, found) for v in values) if values else None
    else:
        value = block.get(name)
        text = None if value is None else decode_header_text(value, found)
    if defects is not None:
        defects.extend(f"{name}: {defect}" for defect in found)
    return text


def message_headers(block: HeaderBlock, defects: list[str] | None = None) -> Headers:
    """Return the headers of note of a message, decoded to str; charset fallbacks met are
    appended to `defects` ("subject: charset: unknown 'x-foo'") when a list is given."""
    return Headers(
        from_=_decoded(block, "from", defects),
        to=_decoded(block, "to", defects),
        cc=_decoded(block, "cc", defects),
        subject=_decoded(block, "subject", defects),
        date=_decoded(block, "date", defects),
        message_id=_decoded(block, "message-id", defects),
        in_reply_to=_decoded(block, "in-reply-to", defects),
        references=_decoded(block, "references", defects),
    )
