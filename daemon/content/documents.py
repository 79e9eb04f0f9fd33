"""An attachment's text (SPEC §15): which reader a file gets, and what its reading came to.

Pure and synchronous, and untrusted input all the way: it runs in a content worker process
that the daemon kills past `content.timeout` and whose memory is capped (`content.max_memory`),
because pypdf and the XML readers have neither limit of their own. Within that, each reader
stops at `max_pages` and `max_text_chars`, and a zip container (DOCX, XLSX, PPTX, ODF) whose
members would unpack past `max_unpacked` is refused before one is opened (zipfile reads no
more of a member than its declared size).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

# text_status (SPEC §15): ready, unsupported, too_large, failed, encrypted.
READY, UNSUPPORTED, TOO_LARGE, FAILED, ENCRYPTED = (
    "ready", "unsupported", "too_large", "failed", "encrypted")
TEXT_STATUSES = (READY, UNSUPPORTED, TOO_LARGE, FAILED, ENCRYPTED)

_OOXML = "application/vnd.openxmlformats-officedocument."
_ODF = "application/vnd.oasis.opendocument."
_BY_TYPE = {
    "application/pdf": "pdf", "application/x-pdf": "pdf",
    _OOXML + "wordprocessingml.document": "docx",
    "application/vnd.ms-word.document.macroenabled.12": "docx",
    _OOXML + "spreadsheetml.sheet": "xlsx",
    "application/vnd.ms-excel.sheet.macroenabled.12": "xlsx",
    _OOXML + "presentationml.presentation": "pptx",
    _ODF + "text": "odf", _ODF + "spreadsheet": "odf", _ODF + "presentation": "odf",
    "text/html": "html", "application/xhtml+xml": "html",
    "text/csv": "csv", "text/tab-separated-values": "csv",
    "text/markdown": "markdown", "text/x-markdown": "markdown",
    "application/json": "json", "text/json": "json",
    "text/calendar": "calendar", "application/ics": "calendar",
    "message/rfc822": "eml", "message/global": "eml",
    "text/plain": "text",
}
_BY_SUFFIX = {
    ".pdf": "pdf", ".docx": "docx", ".docm": "docx", ".xlsx": "xlsx", ".xlsm": "xlsx",
    ".pptx": "pptx", ".odt": "odf", ".ods": "odf", ".odp": "odf",
    ".html": "html", ".htm": "html", ".csv": "csv", ".tsv": "csv",
    ".md": "markdown", ".markdown": "markdown", ".json": "json", ".ics": "calendar",
    ".eml": "eml", ".txt": "text", ".text": "text", ".log": "text",
}
# The kinds whose bytes say what they are (a magic number, a zip's members): only these are
# read on the strength of sniffing alone.
_SNIFFABLE = ("pdf", "docx", "xlsx", "pptx", "odf")
# Readers that open a zip container.
ZIPPED = ("docx", "xlsx", "pptx", "odf")
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an encrypted OOXML file is an OLE container
_ENCRYPTION_INFO = "EncryptionInfo".encode("utf-16-le")


@dataclass(frozen=True)
class ContentLimits:
    """The bounds of one attachment's reading (config `[content]`)."""

    max_text_chars: int = 1_000_000
    max_pages: int = 500
    max_unpacked: int = 200 * 1024 * 1024


@dataclass(frozen=True)
class DocumentText:
    """What reading a file came to: `text` when `status` is ready (cut at `max_text_chars`
    or `max_pages`, then `truncated`), else why not in `error`."""

    status: str
    text: str = ""
    truncated: bool = False
    error: str | None = None


class Truncated(Exception):
    """A reader reached a limit: what it gathered so far is the text."""


class Refused(Exception):
    """The file is not read: `status` says why (too_large, encrypted)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class TextSink:
    """Gathers a reader's text up to `limit` characters, then raises Truncated."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0

    def add(self, text: str) -> None:
        if not text:
            return
        room = self.limit - self.size
        if len(text) > room:
            self.parts.append(text[:max(room, 0)])
            self.size = self.limit
            raise Truncated
        self.parts.append(text)
        self.size += len(text)

    def line(self, text: str) -> None:
        self.add(text + "\n")

    def text(self) -> str:
        return "".join(self.parts).strip()


def document_kind(content_type: str, file_name: str,
                  detected_content_type: str | None = None) -> str | None:
    """The reader for an attachment (pdf, docx, xlsx, pptx, odf, html, csv, markdown, json,
    calendar, eml, text), or None when there is none: from its declared type, else its
    name's suffix, else the type its bytes were sniffed as (for the formats that carry a
    signature: PDF, OOXML, ODF)."""
    declared = content_type.split(";")[0].strip().lower()
    suffix = PurePosixPath(file_name.lower()).suffix
    sniffed = _BY_TYPE.get((detected_content_type or "").lower())
    if sniffed not in _SNIFFABLE:
        sniffed = None  # a text format, "recognised" in random bytes that start with "{"
    for found in (_BY_TYPE.get(declared), _BY_SUFFIX.get(suffix), sniffed):
        if found is not None:
            if found == "text" and suffix in _BY_SUFFIX:  # text/plain named .csv, .md, …
                return _BY_SUFFIX[suffix]
            return found
    if declared.startswith("text/") or declared.endswith("+json"):
        return "json" if declared.endswith("+json") else "text"
    return None


def decode(data: bytes) -> str:
    """Bytes of a text file as text: a BOM's encoding, else UTF-8, else Latin-1."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"),
                       (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return data.decode(codec, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def check_container(path: str, limits: ContentLimits) -> None:
    """Refuse a zip whose members would unpack past `max_unpacked` (a zip bomb), and an
    encrypted OOXML file (an OLE container holding EncryptionInfo)."""
    with open(path, "rb") as f:
        head = f.read(len(_OLE))
        if head == _OLE:
            body = head + f.read(64 * 1024 * 1024)
            if _ENCRYPTION_INFO in body:
                raise Refused(ENCRYPTED, "the document is password-protected")
            raise Refused(FAILED, "an OLE file, not a zip container (a legacy Office file?)")
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            unpacked = sum(m.file_size for m in members)
            if len(members) > 100_000 or unpacked > limits.max_unpacked:
                raise Refused(TOO_LARGE, f"the container unpacks to {unpacked} bytes in "
                              f"{len(members)} members (over content.max_unpacked)")
            if any(m.flag_bits & 0x1 for m in members):
                raise Refused(ENCRYPTED, "the container's members are encrypted")
    except zipfile.BadZipFile as e:
        raise Refused(FAILED, f"not a zip container: {e}") from None
