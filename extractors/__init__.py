"""Pure MIME extraction: raw message bytes and limits in, frozen body and part records out.

No I/O, no awaits, no logging; `extract_message` never raises on any input. It is imported on
first use: the daemon's own process needs only the records (the walker, its type sniffer's
magic table and the TNEF reader live in the extraction worker).
"""

from typing import Any

from extractors.records import (
    Body,
    Encryption,
    Extraction,
    Headers,
    Limits,
    ManifestEntry,
    Part,
    Signed,
)

__all__ = [
    "Body",
    "Encryption",
    "Extraction",
    "Headers",
    "Limits",
    "ManifestEntry",
    "Part",
    "Signed",
    "extract_message",
]


def __getattr__(name: str) -> Any:
    if name == "extract_message":
        from extractors.mime import extract_message

        return extract_message
    raise AttributeError(f"module 'extractors' has no attribute {name!r}")
