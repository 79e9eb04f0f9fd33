"""Pure MIME extraction: raw message bytes and limits in, frozen body and part records out.

No I/O, no awaits, no logging; `extract_message` never raises on any input.
"""

from extractors.mime import extract_message
from extractors.records import Body, Extraction, Headers, Limits, Part

__all__ = ["Body", "Extraction", "Headers", "Limits", "Part", "extract_message"]
