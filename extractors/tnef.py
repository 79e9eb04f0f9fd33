"""The files inside a TNEF payload (`application/ms-tnef`, `winmail.dat`), read with tnefparse.

Pure and total: bytes in, files and defects out; a payload tnefparse cannot read gives no files
and a defect. tnefparse copies the rest of the payload for every object it reads (and parses an
embedded message the same way), so what a payload would cost is estimated first, in one linear
pass per embedded level; a payload over `_COPY_BUDGET` is kept whole with a defect, not decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tnefparse.mapi import IMESSAGE_SIG  # type: ignore[import-untyped]
from tnefparse.tnef import TNEF, TNEFAttachment  # type: ignore[import-untyped]

TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
SIGNATURE = b"\x78\x9f\x3e\x22"
_COPY_BUDGET = 1 << 30  # bytes tnefparse may copy for one payload: well under a second
_OBJECT_HEAD = struct.Struct("<BHHI")  # level, name, type, length; then data and a checksum


@dataclass(frozen=True)
class TnefFile:
    """One file found inside a TNEF payload."""

    name: str
    content_type: str
    data: bytes
    # Position in the returned list of the embedded message that holds this file; None when it
    # lies directly in the payload.
    within: int | None = None


def is_tnef(content_type: str, name: str | None, data: bytes) -> bool:
    """True for a TNEF payload: by its label, or a winmail.dat whose bytes start as TNEF does."""
    if not data.startswith(SIGNATURE):
        return False
    return content_type in TNEF_TYPES or (name or "").lower() == "winmail.dat" or (
        content_type == "application/octet-stream" and name is None)


def _copy_cost(data: bytes) -> int:
    """What tnefparse would copy reading `data`: the tail per object, and the same again for
    each embedded message (found by its signature, measured to the end of its object)."""
    cost = 0
    ranges = [(0, len(data))]  # TNEF streams to measure, as (start, end) in data
    while ranges and cost <= _COPY_BUDGET:
        start, end = ranges.pop()
        offset = start + 6
        while offset + 12 < end and cost <= _COPY_BUDGET:
            _, _, _, length = _OBJECT_HEAD.unpack_from(data, offset)
            length = min(end - offset, length + 11)
            cost += end - offset
            embedded = data.find(IMESSAGE_SIG, offset, offset + length)
            if embedded >= 0:
                ranges.append((embedded + len(IMESSAGE_SIG), offset + length))
            offset += length
    return cost


def _name(attachment: TNEFAttachment, number: int) -> str:
    name = attachment.long_filename()
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    name = str(name).strip("\x00").strip()
    return name or f"attachment-{number}"


def _bodies(tnef: TNEF) -> list[TnefFile]:
    """The message body held in the payload, as MimeKit lists it: RTF and HTML (text when alone)."""
    found = []
    rtf = tnef.rtfbody
    if rtf:
        found.append(TnefFile("body.rtf", "application/rtf", bytes(rtf)))
    if tnef.htmlbody:
        html = tnef.htmlbody
        found.append(TnefFile("body.html", "text/html",
                              html.encode("utf-8") if isinstance(html, str) else bytes(html)))
    if tnef.body and not found:
        text = tnef.body
        found.append(TnefFile("body.txt", "text/plain",
                              text.encode("utf-8") if isinstance(text, str) else bytes(text)))
    return found


def tnef_files(data: bytes, max_depth: int) -> tuple[list[TnefFile], list[str]]:
    """The files inside one TNEF payload, embedded messages walked up to `max_depth` deep."""
    if _copy_cost(data) > _COPY_BUDGET:
        return [], ["tnef: too many objects to decode, kept whole"]
    try:
        top = TNEF(data, do_checksum=False)
    except Exception as exc:  # tnefparse raises assorted errors on damaged payloads
        return [], [f"tnef: unreadable ({type(exc).__name__})"]
    files: list[TnefFile] = []
    defects: list[str] = []
    # An explicit stack of (message, holder position, depth): never recursion.
    stack: list[tuple[TNEF, int | None, int]] = [(top, None, 0)]
    while stack:
        tnef, within, depth = stack.pop()
        try:
            found = _bodies(tnef)
        except Exception as exc:  # a damaged compressed RTF body
            found = []
            defects.append(f"tnef: body unreadable ({type(exc).__name__})")
        if within is not None:
            found = []  # an embedded message's body stays inside it, as with .eml files
        files.extend(TnefFile(f.name, f.content_type, f.data, within) for f in found)
        for number, attachment in enumerate(tnef.attachments):
            embedded = getattr(attachment, "embed", None)
            files.append(TnefFile(
                _name(attachment, number),
                "application/vnd.ms-tnef" if embedded is not None else "application/octet-stream",
                bytes(attachment.data), within))
            if isinstance(embedded, TNEF):
                if depth + 1 < max_depth:
                    stack.append((embedded, len(files) - 1, depth + 1))
                else:
                    defects.append("tnef: depth_limit")
    return files, defects
