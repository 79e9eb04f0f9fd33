"""Safe file names for attachments, and `part-<index>.<ext>` names for parts without one.

A safe name holds no directory, no control or bidi-override characters, no Windows-reserved
device name or character, and fits 255 bytes of UTF-8 with its extension kept. Extensions come
from a fixed table, not `mimetypes`, whose answers depend on the machine's files (and reading
them would be I/O). Nothing here may raise.
"""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_BYTES = 255
_MAX_EXTENSION_CHARS = 16
_MAX_SCANNED_CHARS = 1024

_EXTENSIONS = {
    "text/plain": "txt",
    "text/html": "html",
    "text/calendar": "ics",
    "text/csv": "csv",
    "text/xml": "xml",
    "text/markdown": "md",
    "text/vcard": "vcf",
    "text/x-vcard": "vcf",
    "text/rfc822-headers": "txt",
    "text/enriched": "txt",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/pjpeg": "jpg",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/webp": "webp",
    "image/tiff": "tif",
    "image/svg+xml": "svg",
    "image/heic": "heic",
    "image/x-icon": "ico",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/ogg": "ogg",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "application/pdf": "pdf",
    "application/zip": "zip",
    "application/gzip": "gz",
    "application/x-gzip": "gz",
    "application/x-tar": "tar",
    "application/x-7z-compressed": "7z",
    "application/vnd.rar": "rar",
    "application/x-rar-compressed": "rar",
    "application/json": "json",
    "application/xml": "xml",
    "application/rtf": "rtf",
    "application/msword": "doc",
    "application/vnd.ms-excel": "xls",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.ms-outlook": "msg",
    "application/ms-tnef": "dat",
    "application/vnd.ms-tnef": "dat",
    "application/ics": "ics",
    "application/pgp-encrypted": "asc",
    "application/pgp-signature": "asc",
    "application/pgp-keys": "asc",
    "application/pkcs7-mime": "p7m",
    "application/x-pkcs7-mime": "p7m",
    "application/pkcs7-signature": "p7s",
    "application/x-pkcs7-signature": "p7s",
    "application/octet-stream": "bin",
    "message/rfc822": "eml",
    "message/global": "eml",
    "message/news": "eml",
    "message/delivery-status": "txt",
    "message/global-delivery-status": "txt",
    "message/disposition-notification": "txt",
}
_SUFFIX_EXTENSIONS = {"+xml": "xml", "+json": "json", "+zip": "zip"}
_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{device}{n}" for device in ("COM", "LPT") for n in "0123456789¹²³"
}
# Characters Windows refuses in names; ":" would also open an NTFS alternate data stream.
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')
_WHITESPACE = re.compile(r"\s+")
# Cc control, Cf format (bidi overrides like U+202E hide a real extension), Cs lone surrogates.
_DROPPED_CATEGORIES = {"Cc", "Cf", "Cs"}


def extension_for(content_type: str) -> str:
    """Return the file extension (without dot) for a content type from a fixed table."""
    if content_type in _EXTENSIONS:
        return _EXTENSIONS[content_type]
    for suffix, extension in _SUFFIX_EXTENSIONS.items():
        if content_type.endswith(suffix):
            return extension
    maintype = content_type.partition("/")[0]
    if maintype == "text":
        return "txt"
    if maintype == "multipart":
        return "eml"  # an opaque multipart is kept with its headers: a MIME entity
    return "bin"


def fallback_file_name(index: int, content_type: str) -> str:
    """Return `part-<index>.<ext>` for a part that has no usable name."""
    return f"part-{index}.{extension_for(content_type)}"


def _safe_character(ch: str) -> str:
    if ch.isprintable():
        return ch
    if ch.isspace():
        return " "  # tabs, newlines, line separators: collapsed with other whitespace later
    return "" if unicodedata.category(ch) in _DROPPED_CATEGORIES else ch


def _drop_unsafe_characters(name: str) -> str:
    if len(name) > _MAX_SCANNED_CHARS:
        # The result fits in 255 bytes anyway; keep the start and the end that holds the extension.
        name = name[: _MAX_SCANNED_CHARS // 2] + name[-_MAX_EXTENSION_CHARS * 2 :]
    if name.isprintable():
        return name
    return "".join(_safe_character(ch) for ch in name)


def _truncate_utf8(text: str, limit: int) -> str:
    # Decoding with "ignore" drops a multi-byte character cut in half at the limit.
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _fit(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > _MAX_EXTENSION_CHARS:
        return _truncate_utf8(name, MAX_NAME_BYTES).rstrip(". ")
    budget = MAX_NAME_BYTES - len(extension.encode("utf-8")) - 1
    return _truncate_utf8(stem, budget).rstrip(". ") + "." + extension


def safe_file_name(name: str | None, index: int, content_type: str) -> str:
    """Return a name safe to write anywhere: basename only, clean, ≤255 bytes, never empty."""
    if name is None:
        return fallback_file_name(index, content_type)
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _drop_unsafe_characters(base)
    base = _WINDOWS_FORBIDDEN.sub("_", base)
    base = _WHITESPACE.sub(" ", base).strip(". ")
    if not base:
        return fallback_file_name(index, content_type)
    device = base.split(".", 1)[0].rstrip(" ").upper()
    if device in _RESERVED:
        base = "_" + base
    return _fit(base) or fallback_file_name(index, content_type)
