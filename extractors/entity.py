"""What one MIME entity's header block means: type, disposition, encoding, Content-ID, name.

Missing values get RFC 2045 defaults (text/plain, or message/rfc822 inside multipart/digest);
values that cannot be understood become safe ones with a defect. Never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from extractors.charsets import decode_fallback, normalize_charset
from extractors.headers import HeaderBlock
from extractors.params import param_text, parse_structured
from extractors.transfer import normalize_encoding

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9a-z]+"
_MEDIA_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}")
_DISPOSITIONS = ("attachment", "inline")
_SHOWN = 60  # characters of a bad value quoted in a defect


@dataclass(frozen=True)
class Entity:
    """The MIME meaning of one header block."""

    content_type: str  # lower-case "type/subtype", defaulted when absent
    params: dict[str, str] = field(default_factory=dict)  # Content-Type parameters
    disposition: str | None = None  # "attachment", "inline" or None
    disposition_params: dict[str, str] = field(default_factory=dict)
    transfer_encoding: str = ""  # lower-case token, "" when absent
    content_id: str | None = None
    defects: tuple[str, ...] = ()

    @property
    def maintype(self) -> str:
        """The part of the content type before the slash."""
        return self.content_type.partition("/")[0]

    @property
    def charset(self) -> str | None:
        """The declared charset, lower-case, None when absent."""
        return normalize_charset(self.params.get("charset"))

    def file_name(self) -> str | None:
        """The decoded name as sent: Content-Disposition filename, else Content-Type name."""
        return self.decoded_file_name()[0]

    def decoded_file_name(self) -> tuple[str | None, tuple[str, ...]]:
        """The decoded name as sent, and the charset defects met decoding it."""
        for params, key in ((self.disposition_params, "filename"), (self.params, "name")):
            defects: list[str] = []
            name = param_text(params, key, self.charset, defects)
            if name is not None and name.strip():
                return name, tuple(f"file name: {defect}" for defect in defects)
        return None, ()

    def is_attachment(self, name: str | None) -> bool:
        """True when the sender marked the entity as a file: attachment disposition or a name."""
        return self.disposition == "attachment" or name is not None


def _content_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not raw.isascii():
        raw, _ = decode_fallback(raw.encode("latin-1", "replace"))
    value = raw.strip().removeprefix("<").removesuffix(">").strip()
    return value or None


def read_entity(block: HeaderBlock, default_type: str = "text/plain") -> Entity:
    """Interpret the MIME headers of one header block."""
    defects: list[str] = []
    raw_type = block.get("content-type")
    content_type, params, type_defects = parse_structured(raw_type or "")
    defects.extend(f"content-type: {defect}" for defect in type_defects)
    if not content_type:
        content_type = default_type
    elif _MEDIA_TYPE.fullmatch(content_type) is None:
        defects.append(f"content-type: unparseable {content_type[:_SHOWN]!r}")
        content_type = "application/octet-stream"
    raw_disposition = block.get("content-disposition")
    disposition: str | None = None
    disposition_params: dict[str, str] = {}
    if raw_disposition is not None:
        disposition, disposition_params, disposition_defects = parse_structured(raw_disposition)
        defects.extend(f"content-disposition: {defect}" for defect in disposition_defects)
        if disposition and disposition not in _DISPOSITIONS:
            # RFC 2183 §2.8: an unknown disposition is treated as an attachment.
            defects.append(f"content-disposition: unknown {disposition[:_SHOWN]!r}")
            disposition = "attachment"
        disposition = disposition or None
    return Entity(
        content_type=content_type,
        params=params,
        disposition=disposition,
        disposition_params=disposition_params,
        transfer_encoding=normalize_encoding(block.get("content-transfer-encoding")),
        content_id=_content_id(block.get("content-id")),
        defects=tuple(defects),
    )
