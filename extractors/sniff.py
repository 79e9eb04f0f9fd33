"""Content sniffing: what the bytes of a part look like, and whether that contradicts the label.

A small table of magic numbers answers for the common types before puremagic's database is asked,
because puremagic calls some zip files Word documents. Its database is asked through an index by
offset and byte (`_Index`): `puremagic.from_string` compares every one of its ~1,450 signatures
in Python on each call (0.2 ms for bytes it does not know, which is what random or encrypted
data is), where the index looks at the few that start with the byte found at each offset.

A mismatch is only reported where it matters to an agent opening the file: an executable behind
any other label, a script or HTML page behind a document or media label, or one specific format
posing as another.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import puremagic
import puremagic.main as puremagic_main

_HEAD = 4096
_PE = "application/vnd.microsoft.portable-executable"
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"\x7fELF", "application/x-executable"),
    (b"\xcf\xfa\xed\xfe", "application/x-mach-binary"),
    (b"\xce\xfa\xed\xfe", "application/x-mach-binary"),
    (b"\xfe\xed\xfa\xcf", "application/x-mach-binary"),
    (b"\xfe\xed\xfa\xce", "application/x-mach-binary"),
    (b"{\\rtf", "application/rtf"),
    (b"-----BEGIN PGP MESSAGE-----", "application/pgp-encrypted"),
    (b"-----BEGIN PGP SIGNATURE-----", "application/pgp-signature"),
    (b"-----BEGIN PGP PUBLIC KEY BLOCK-----", "application/pgp-keys"),
)
# Indexed by first byte so a part costs one dict lookup, not a loop over every signature.
_MAGIC_BY_FIRST_BYTE: dict[int, tuple[tuple[bytes, str], ...]] = {
    first: tuple(entry for entry in _MAGIC if entry[0][0] == first)
    for first in {prefix[0] for prefix, _ in _MAGIC}
}
# Text that a browser or a shell runs: sniffed so that it cannot pose as a PDF or an image.
_SCRIPT = "text/x-script"
_HTML_START = re.compile(rb"\s*<(?:!doctype\s+html|html|head|body|script|iframe)[\s>/]", re.I)
_ACTIVE = {_SCRIPT, "text/html"}
_EXECUTABLES = {
    _PE,
    "application/x-msdownload",
    "application/x-dosexec",
    "application/x-executable",
    "application/x-elf",
    "application/x-sharedlib",
    "application/x-mach-binary",
    "application/x-msdos-program",
    "application/x-ms-installer",
    "application/x-msi",
    "application/exe",
    "application/x-exe",
}
# Formats that are zip or OLE containers: a .docx is a zip, a .doc is OLE; labels mix them freely.
_CONTAINERS = {
    "application/zip",
    "application/x-zip-compressed",
    "application/gzip",
    "application/x-gzip",
    "application/x-tar",
    "application/vnd.rar",
    "application/x-rar-compressed",
    "application/x-7z-compressed",
    "application/java-archive",
    "application/epub+zip",
    "application/x-ole-storage",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.ms-outlook",
}
_CONTAINER_PREFIXES = ("application/vnd.openxmlformats-", "application/vnd.oasis.opendocument.")


def _magic(head: bytes) -> str | None:
    for prefix, content_type in _MAGIC_BY_FIRST_BYTE.get(head[0], ()):
        if head.startswith(prefix):
            return content_type
    if head.startswith(b"MZ") and len(head) >= 64:
        # "MZ" alone also starts text; a PE file points at its "PE\0\0" header from 0x3C.
        offset = int.from_bytes(head[0x3C:0x40], "little")
        if head[offset : offset + 4] == b"PE\x00\x00":
            return _PE
    if head.startswith(b"MZ") and not _looks_like_text(head):
        return "application/x-dosexec"
    return None


def _text_kind(head: bytes) -> str:
    """text/html, a script (a "#!" line), or text/plain for any other text."""
    head = head.removeprefix(b"\xef\xbb\xbf")
    if head.startswith(b"#!"):
        return _SCRIPT
    if _HTML_START.match(head, 0, 1024) is not None:
        return "text/html"
    return "text/plain"


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the head is still text.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


class _Index:
    """puremagic's signature matching with the same result, by lookup instead of a scan.

    `matches(header, footer)` returns the rows puremagic's `_identify_all` collects, in its
    order (header signatures in the database's order, then footer ones, then the multi-part
    ones), so that its `_confidence` ranks them the same; a unit test holds the two together.
    """

    def __init__(self, headers: Sequence[Any], footers: Sequence[Any],
                 multi_part: Mapping[bytes, Sequence[Any]]) -> None:
        self._headers: dict[tuple[int, int], list[tuple[int, Any]]] = {}
        for i, row in enumerate(headers):
            self._headers.setdefault((row.offset, row.byte_match[0]), []).append((i, row))
        self._offsets = sorted({row.offset for row in headers})
        self._footers = tuple(footers)
        self._multi_part = multi_part

    def matches(self, header: bytes, footer: bytes) -> list[Any]:
        found: list[tuple[int, Any]] = []
        size = len(header)
        for offset in self._offsets:
            if offset >= size:
                break
            for i, row in self._headers.get((offset, header[offset]), ()):
                end = offset + len(row.byte_match)
                if end <= size and header[offset:end] == row.byte_match:
                    found.append((i, row))
        found.sort(key=lambda pair: pair[0])
        matches = [row for _, row in found]
        for row in self._footers:
            end = row.offset + len(row.byte_match)
            if (footer[row.offset:end] if end != 0 else footer[row.offset:]) == row.byte_match:
                matches.append(row)
        matches.extend(self._multi(matches, header, footer))
        return matches

    def _multi(self, matches: Iterable[Any], header: bytes, footer: bytes) -> list[Any]:
        """puremagic's second step, as it does it: a set, so its order is the set's."""
        new: set[Any] = set()
        for matched in matches:
            for row in self._multi_part.get(matched.byte_match, ()):
                start, end = row.offset, row.offset + len(row.byte_match)
                if row.offset < 0:
                    if (footer[start:end] if end != 0 else footer[start:]) == row.byte_match:
                        new.add(row._replace(byte_match=matched.byte_match + row.byte_match))
                elif end <= len(header) and header[start:end] == row.byte_match:
                    new.add(row._replace(byte_match=header[matched.offset:end]))
        return list(new)

    def mime_type(self, data: bytes) -> str | None:
        """What `puremagic.from_string(data, mime=True)` answers; None where it raises."""
        if not data:
            return None
        header, footer = data[:puremagic_main.max_head], data[-puremagic_main.max_foot:]
        try:
            best = puremagic_main._confidence(self.matches(header, footer))[0]
        except puremagic.PureError:
            return None
        return best.mime_type if isinstance(best.mime_type, str) else None


_PUREMAGIC = _Index(puremagic_main.magic_header_array, puremagic_main.magic_footer_array,
                    puremagic_main.multi_part_dict)


def detect_content_type(data: bytes) -> str | None:
    """Return the content type the bytes look like, None when unknown or empty."""
    head = data[:_HEAD]
    if not head:
        return None
    found = _magic(head)
    if found is not None:
        return found
    if _looks_like_text(head):
        return _text_kind(head)  # other text formats are not worth a puremagic call
    try:
        guessed = _PUREMAGIC.mime_type(head)
    except Exception:  # puremagic's ranking raises its own and assorted errors on odd input
        return None
    return guessed.lower() if guessed is not None and "/" in guessed else None


def _family(content_type: str) -> str | None:
    if content_type in _EXECUTABLES:
        return "executable"
    if content_type in ("application/pdf", "application/x-pdf"):
        return "pdf"
    if content_type in _CONTAINERS or content_type.startswith(_CONTAINER_PREFIXES):
        return "container"
    maintype = content_type.partition("/")[0]
    if maintype in ("image", "audio", "video"):
        # image/png labelled image/jpeg is common and harmless: one family.
        return maintype
    return None  # text, octet-stream and the rest: labels that promise no specific format


def is_mismatch(declared: str, detected: str | None) -> bool:
    """True when the sniffed type contradicts the declared one in a way that matters."""
    if detected is None or declared in ("application/octet-stream", "binary/octet-stream"):
        return False
    declared_family, detected_family = _family(declared), _family(detected)
    if detected_family == "executable":
        return declared_family != "executable"
    if detected in _ACTIVE:
        # A page or a script is harmless behind a text label, dangerous behind a document one.
        return declared_family not in (None, "executable")
    return (
        declared_family is not None
        and detected_family is not None
        and declared_family != detected_family
    )
