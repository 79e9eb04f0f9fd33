"""Pure MIME extraction: raw message bytes and limits in, frozen body and part records out.

No I/O, no awaits, no logging; `extract_message` never raises on any input.
"""

from extractors.mime import extract_message
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
