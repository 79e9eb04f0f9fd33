"""extract_message: one message's bytes in, its bodies and attachment records out.

Pure and total: no I/O, no logging, no input makes it raise (MemoryError aside). Paths are IMAP
part numbers ("1" for a single-part message). Rejected parts carry `data=b""`: `too_large` keeps
the decoded size and sha256; the one summary part standing for all beyond `max_parts` has 0, "".
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Literal, TypeVar

from extractors.charsets import decode_text
from extractors.encoded_words import decode_header_text
from extractors.filenames import safe_file_name
from extractors.headers import HeaderBlock, message_headers, parse_header_block
from extractors.pgp import (
    apply_manifest,
    cleartext_signed,
    pgp_mime_signed,
    read_manifest,
    signer_address,
)
from extractors.records import (
    Body,
    Extraction,
    Headers,
    Limits,
    ManifestEntry,
    Part,
    PartOutcome,
    PartSource,
    Signed,
)
from extractors.security import part_encryption
from extractors.sniff import detect_content_type, is_mismatch
from extractors.tnef import is_tnef, tnef_files
from extractors.transfer import UUENCODE_ENCODINGS, Decoded, decode_transfer, is_identity
from extractors.uuencode import uuencoded_files
from extractors.walk import EMBEDDED_MESSAGE_TYPES, Leaf, MimeWalk

_UUENCODE_TYPES = frozenset({"application/x-uuencode", "text/x-uuencode", "application/uue"})
_BINHEX_TYPES = frozenset({"application/mac-binhex40", "application/x-binhex40"})
_BODY_KINDS: dict[str, Literal["text", "html"]] = {"text/plain": "text", "text/html": "html"}
_T = TypeVar("_T")


def _decode_leaf(leaf: Leaf) -> Decoded:
    if leaf.opaque:
        return Decoded(leaf.buf[leaf.start : leaf.end])
    return decode_transfer(memoryview(leaf.buf)[leaf.body_start : leaf.end],
                           leaf.entity.transfer_encoding)


def _embedded_subject_name(content: bytes) -> str | None:
    subject = parse_header_block(content, 0, len(content)).get("subject")
    if subject is None:
        return None
    # A subject is not a path: its slashes must not be read as directories.
    text = decode_header_text(subject).replace("/", "_").replace("\\", "_").strip()
    return f"{text}.eml" if text else None


class _Collector:
    """Accumulates the records of one extraction; lives only inside one call."""

    def __init__(self, limits: Limits, walk: MimeWalk) -> None:
        self.limits = limits
        self.walk = walk
        self.parts: list[Part] = []
        self.bodies: dict[str, Body] = {}
        self.taken: set[tuple[int, str]] = set()  # (scope, body kind) already chosen
        self.dropped = 0
        self.first_dropped_path = ""

    def add(self, leaf: Leaf) -> None:
        """Record one leaf as a body of its message, or as an attachment."""
        kind = _BODY_KINDS.get(leaf.entity.content_type)
        if (
            kind is not None
            and leaf.body_candidate
            and (leaf.scope, kind) not in self.taken
            and not leaf.entity.is_attachment(leaf.entity.file_name())
        ):
            self.taken.add((leaf.scope, kind))
            if leaf.scope == 0:
                self.bodies[kind] = self._body(leaf, kind)
            return  # an embedded message's bodies stay inside its .eml
        if len(self.parts) >= self.limits.max_parts:
            if not self.dropped:
                self.first_dropped_path = leaf.path
            self.dropped += 1
            return
        self._attachment(leaf)

    def _body(self, leaf: Leaf, kind: Literal["text", "html"]) -> Body:
        decoded = _decode_leaf(leaf)
        if kind == "text":
            self._uuencoded(leaf, decoded.data, None)
        text, charset_defects = decode_text(decoded.data, leaf.entity.charset)
        return Body(
            kind=kind,
            content_type=leaf.entity.content_type,
            charset=leaf.entity.charset,
            text=text,
            size=len(text.encode("utf-8")),
            path=leaf.path,
            defects=(*leaf.defects, *decoded.defects, *charset_defects),
        )

    def _attachment(self, leaf: Leaf) -> None:
        entity = leaf.entity
        name, name_defects = entity.decoded_file_name()
        index = len(self.parts)
        decoded = _decode_leaf(leaf)
        data = decoded.data
        defects = [*leaf.defects, *name_defects, *decoded.defects]
        embedded = entity.content_type in EMBEDDED_MESSAGE_TYPES and decoded.failure is None
        if entity.content_type in _BINHEX_TYPES:
            defects.append("binhex: kept as sent, not decoded")
        elif entity.content_type == "message/partial":
            # RFC 2046 §5.2.2: fragments are reassembled only by the final recipient's reader.
            defects.append("message/partial: one fragment, kept as sent, not reassembled")
        elif entity.content_type == "message/external-body":
            # RFC 2046 §5.2.3: the body lives elsewhere; fetching it would be an SSRF.
            defects.append("message/external-body: a reference, recorded and not fetched")
        shown_name = name
        if shown_name is None and embedded:
            shown_name = _embedded_subject_name(data)
        outcome: PartOutcome = "ok"
        reason = decoded.failure
        detected = None if decoded.failure else detect_content_type(data)
        size, digest = len(data), hashlib.sha256(data).hexdigest()
        if decoded.failure:
            outcome = "failed"
        elif size > self.limits.max_attachment_size:
            outcome, reason = "rejected", "too_large"
        if embedded and not leaf.can_descend:
            defects.append("depth_limit")
        encryption = part_encryption(entity, name, data, payload=leaf.encrypted)
        self.parts.append(
            Part(
                index=index,
                path=leaf.path,
                content_type=entity.content_type,
                detected_content_type=detected,
                content_type_mismatch=is_mismatch(entity.content_type, detected),
                disposition=entity.disposition,
                content_id=entity.content_id,
                file_name=safe_file_name(shown_name, index, entity.content_type),
                original_file_name=name,
                data=b"" if outcome == "rejected" else data,
                size=size,
                sha256=digest,
                parent=leaf.parent,
                source="uuencode" if entity.transfer_encoding in UUENCODE_ENCODINGS else "mime",
                encrypted=encryption is not None,
                encryption=encryption,
                outcome=outcome,
                reason=reason,
                defects=tuple(defects),
            )
        )
        if embedded and leaf.can_descend:
            in_place = is_identity(entity.transfer_encoding)
            self.walk.enter_message(leaf, None if in_place else data, index)
        elif outcome == "ok" and is_tnef(entity.content_type, name, data):
            self._tnef_files(leaf, index, data)
        elif outcome == "ok" and (entity.content_type in _UUENCODE_TYPES
                                  or entity.content_type == "text/plain"):
            self._uuencoded(leaf, data, index)

    def _uuencoded(self, leaf: Leaf, text: bytes, parent: int | None) -> None:
        for found in uuencoded_files(text):
            self._derived(leaf, parent, found.name, "application/octet-stream", found.data,
                          "uuencode", found.defects)

    def _tnef_files(self, leaf: Leaf, index: int, data: bytes) -> None:
        files, defects = tnef_files(data, max(1, self.limits.max_depth - leaf.depth))
        if defects:
            part = self.parts[index]
            self.parts[index] = dataclasses.replace(part, defects=(*part.defects, *defects))
        indexes: list[int | None] = []
        for found in files:
            parent = index if found.within is None else indexes[found.within]
            indexes.append(self._derived(leaf, parent, found.name, found.content_type,
                                         found.data, "tnef"))

    def _derived(
        self,
        leaf: Leaf,
        parent: int | None,
        name: str,
        content_type: str,
        data: bytes,
        source: PartSource,
        defects: tuple[str, ...] = (),
    ) -> int | None:
        """Record a file found inside a part (TNEF, uuencode); None when beyond max_parts."""
        if len(self.parts) >= self.limits.max_parts:
            if not self.dropped:
                self.first_dropped_path = leaf.path
            self.dropped += 1
            return None
        index = len(self.parts)
        detected = detect_content_type(data)
        size = len(data)
        too_large = size > self.limits.max_attachment_size
        encryption = part_encryption(None, name, data)
        self.parts.append(
            Part(
                index=index,
                path=leaf.path,
                content_type=content_type,
                detected_content_type=detected,
                content_type_mismatch=is_mismatch(content_type, detected),
                disposition="attachment",
                content_id=None,
                file_name=safe_file_name(name, index, content_type),
                original_file_name=name,
                data=b"" if too_large else data,
                size=size,
                sha256=hashlib.sha256(data).hexdigest(),
                parent=parent,
                source=source,
                encrypted=encryption is not None,
                encryption=encryption,
                outcome="rejected" if too_large else "ok",
                reason="too_large" if too_large else None,
                defects=defects,
            )
        )
        return index

    def summary_of_dropped(self) -> Part | None:
        """One rejected part standing for every part beyond max_parts, so none vanish silently."""
        if not self.dropped:
            return None
        index = len(self.parts)
        return Part(
            index=index,
            path=self.first_dropped_path,
            content_type="application/octet-stream",
            detected_content_type=None,
            content_type_mismatch=False,
            disposition=None,
            content_id=None,
            file_name=f"part-{index}.bin",
            original_file_name=None,
            data=b"",
            size=0,
            sha256="",
            outcome="rejected",
            reason="part_limit",
            defects=(f"part_limit: {self.dropped} parts not listed",),
        )


def _total(defects: list[str], what: str, compute: Callable[[], _T], fallback: _T) -> _T:
    """compute(), or fallback with a defect: the contract is total, one bug loses one field."""
    try:
        return compute()
    except MemoryError:
        raise
    except Exception as exc:
        defects.append(f"internal error in {what}: {type(exc).__name__}")
        return fallback


def _signed(walk: MimeWalk, text: Body | None, top: HeaderBlock,
            defects: list[str]) -> Signed | None:
    """What the top message's OpenPGP signature covers: PGP/MIME first, else a cleartext block."""
    signer = signer_address(top.get("from"))
    found = walk.signed_parts()
    if found is not None:
        signed, signed_defects = pgp_mime_signed(*found, signer)
        defects.extend(signed_defects)
        return signed
    return None if text is None else cleartext_signed(text.text, signer)


def _manifest(raw: bytes, top: HeaderBlock, parts: list[Part],
              defects: list[str]) -> tuple[ManifestEntry, ...] | None:
    """The X-AgentMail-Attachments entries, their encrypted flags applied to `parts` in place."""
    manifest, manifest_defects = read_manifest(raw, top.body_start)
    defects.extend(manifest_defects)
    if manifest:
        flagged, unmatched = apply_manifest(parts, manifest)
        parts[:] = flagged
        defects.extend(unmatched)
    return manifest


def _without_nul(value: str | None, what: str, defects: list[str]) -> str | None:
    """`value` with every NUL made U+FFFD, and a defect saying so. These strings become text
    columns, and PostgreSQL's cannot hold a NUL: the row would never be written. The raw
    message keeps the bytes as sent."""
    if value is None or "\x00" not in value:
        return value
    defects.append(f"{what}: NUL replaced")
    return value.replace("\x00", "\ufffd")


def _headers_without_nul(headers: Headers, defects: list[str]) -> Headers:
    return Headers(**{f.name: _without_nul(getattr(headers, f.name), f.name.rstrip("_"), defects)
                      for f in dataclasses.fields(headers)})


def _part_without_nul(part: Part) -> Part:
    defects: list[str] = []
    original = _without_nul(part.original_file_name, "original file name", defects)
    content_id = _without_nul(part.content_id, "content id", defects)
    if not defects:
        return part
    return dataclasses.replace(part, original_file_name=original, content_id=content_id,
                               defects=(*part.defects, *defects))


def extract_message(raw: bytes, limits: Limits) -> Extraction:
    """Extract the headers, text/html bodies and attachment parts of one raw message."""
    walk = MimeWalk(raw, limits.max_depth)
    collector = _Collector(limits, walk)
    defects: list[str] = []
    try:
        for leaf in walk.leaves():
            try:
                collector.add(leaf)
            except MemoryError:
                raise
            except Exception as exc:  # the contract is total: one bad part must not lose the rest
                defects.append(f"internal error at part {leaf.path}: {type(exc).__name__}")
    except MemoryError:
        raise
    except Exception as exc:  # a walker bug: keep every part found so far
        defects.append(f"internal error while walking: {type(exc).__name__}")
    headers = Headers()
    signed: Signed | None = None
    manifest: tuple[ManifestEntry, ...] | None = None
    text_body = collector.bodies.get("text")
    top = walk.top
    if top is not None:
        headers = _total(defects, "headers", lambda: message_headers(top, defects), headers)
        signed = _total(defects, "signed content",
                        lambda: _signed(walk, text_body, top, defects), None)
        manifest = _total(defects, "x-agentmail-attachments",
                          lambda: _manifest(raw, top, collector.parts, defects), None)
    headers = _headers_without_nul(headers, defects)
    summary = collector.summary_of_dropped()
    if summary is not None:
        collector.parts.append(summary)
        defects.append(
            f"part_limit: {collector.dropped} parts beyond {limits.max_parts} not listed"
        )
    if not raw or raw.isspace():
        defects.append("message: empty")
    pgp = walk.pgp
    if pgp is None and signed is not None:
        pgp = "signed"  # only a cleartext signature gets here: PGP/MIME set walk.pgp itself
    return Extraction(
        headers=headers,
        text_body=text_body,
        html_body=collector.bodies.get("html"),
        attachments=tuple(_part_without_nul(p) for p in collector.parts),
        defects=(*walk.defects, *defects),
        pgp=pgp,
        smime=walk.smime,
        signed=signed,
        manifest=manifest,
    )
