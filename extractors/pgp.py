"""Recognising OpenPGP in mail: ciphertext, signed content, the signer, the attachment manifest.

Nothing here verifies or decrypts: it finds the bytes a verifier needs (RFC 3156 signed content
made CRLF, a cleartext-signed block) and reads the X-AgentMail-Attachments header (SPEC §8)
leniently. Pure; never raises on any input, every bound is a named constant.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from extractors.charsets import decode_fallback, scrub_surrogates
from extractors.encoded_words import decode_encoded_words
from extractors.entity import read_entity
from extractors.headers import parse_header_block
from extractors.records import Encryption, ManifestEntry, Part, Signed
from extractors.transfer import decode_transfer

Format = Literal["armored", "binary"]

_ARMOR = b"-----BEGIN PGP "
_ARMOR_SNIFFED = 1024  # leading bytes (blanks included) searched for an armor header line
# RFC 9580 §5 packet tags that start an OpenPGP message file: PKESK (1), SKESK (3), compressed
# (8), literal (11), SEIPD (18) and RFC 4880bis AEAD data (20); SPEC §8 flags such files as
# encrypted. Then tags that start a key, a detached signature or a one-pass signed message,
# none of which is ciphertext.
_MESSAGE_TAGS = frozenset({1, 3, 8, 11, 18, 20})
_NOT_CIPHERTEXT_TAGS = frozenset({2, 4, 5, 6, 7, 14})
# The first body octet each message packet may start with (versions, algorithms, formats).
_FIRST_BODY_OCTETS = {
    1: b"\x03\x06", 3: b"\x04\x05\x06", 8: b"\x00\x01\x02\x03", 11: b"btul1m",
    18: b"\x01\x02", 20: b"\x01",
}
_DATA_TAGS = frozenset({8, 11, 18, 20})  # the only packets allowed an open-ended length

_CLEARTEXT_BEGIN = re.compile(r"^-----BEGIN PGP SIGNED MESSAGE-----[ \t]*\r?$", re.MULTILINE)
_CLEARTEXT_END = re.compile(r"^-----END PGP SIGNATURE-----[ \t]*(?:\r?\n|\Z)", re.MULTILINE)

_MAX_FROM = 2048  # characters of a From value worth reading as one mailbox
_ATOM = r"[^\s\"(),:;<>@\[\\\]]+"
_LOCAL = re.compile(rf"{_ATOM}|\"(?:[^\"\\\r\n]|\\.)*\"")
_DOMAIN = re.compile(rf"{_ATOM}|\[[^\[\]\\\s]*\]")

MANIFEST_HEADER = "x-agentmail-attachments"
_MANIFEST_FIELD = re.compile(rb"(?:\A|\n)x-agentmail-attachments[ \t]*:", re.IGNORECASE)
_VALUE_END = re.compile(rb"\n(?![ \t])")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
MAX_MANIFEST_BYTES = 64 * 1024
MAX_MANIFEST_ENTRIES = 1000
_MAX_NAME = 255  # characters kept of a file name or a content type
_MAX_TOKEN = 32  # characters kept of an algorithm or a format
_DEFAULT_ENCRYPTION = Encryption("openpgp", "armored")
_DEFECTS_PER_KIND = 10  # manifest defects named one by one before they are only counted
_SHOWN = 60  # characters of a name quoted in a defect
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # dropped from manifest text: no NUL reaches a row


# --- ciphertext -------------------------------------------------------------------------------


def _packet_header(data: bytes) -> tuple[int, int, int | None] | None:
    """(tag, offset of the body, body length or None when open-ended) of the first packet."""
    if not data or not data[0] & 0x80:
        return None
    first = data[0]
    if not first & 0x40:  # old format: 4-bit tag, then 1, 2, 4 or no length octets
        size = (1, 2, 4, 0)[first & 0x03]
        length = int.from_bytes(data[1 : 1 + size], "big") if size else None
        return (first >> 2) & 0x0F, 1 + size, length
    tag = first & 0x3F
    octet = data[1] if len(data) > 1 else 0
    if octet < 192:
        return tag, 2, octet
    if octet < 224:
        return tag, 3, ((octet - 192) << 8) + (data[2] if len(data) > 2 else 0) + 192
    if octet == 255:
        return tag, 6, int.from_bytes(data[2:6], "big")
    return tag, 2, None  # a partial body length: the packet goes on in chunks


def _plausible_message(data: bytes, tag: int, offset: int, length: int | None) -> bool:
    # Without a name or a type to go by, one tag octet is too weak (a tenth of all bytes would
    # do): the packet must fit the data and start as its kind of packet must.
    if offset >= len(data) or data[offset] not in _FIRST_BODY_OCTETS[tag]:
        return False
    if length is None:
        return tag in _DATA_TAGS
    return offset + length <= len(data)


def openpgp_data(data: bytes, *, hinted: bool) -> tuple[bool, Format] | None:
    """What OpenPGP data starts the bytes: (is a message, "armored" | "binary"), else None.

    A message is what may be ciphertext; keys and signatures are not. `hinted` (a .pgp name, an
    application/pgp-encrypted type, a PGP/MIME payload) lets a packet tag octet alone decide,
    old or new format; without it the first packet must also look whole.
    """
    head = data[:_ARMOR_SNIFFED].lstrip()
    if head.startswith(_ARMOR):
        label, closed, _ = head[len(_ARMOR) :].partition(b"-----")
        # "MESSAGE" and "MESSAGE, PART 1/2"; not "SIGNED MESSAGE" nor "PUBLIC KEY BLOCK".
        return (bool(closed) and label.startswith(b"MESSAGE"), "armored")
    header = _packet_header(data)
    if header is None:
        return None
    tag, offset, length = header
    if tag in _MESSAGE_TAGS and (hinted or _plausible_message(data, tag, offset, length)):
        return (True, "binary")
    if tag in _NOT_CIPHERTEXT_TAGS and hinted:
        return (False, "binary")
    return None


# --- signed content ---------------------------------------------------------------------------


def canonical_crlf(data: bytes) -> bytes:
    """Every bare LF made CRLF; CRLF and lone CR left as they are (RFC 3156 §5)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    # Two C-speed passes; a regex with a look-behind is twenty times slower on large parts.
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def pgp_mime_signed(
    buf: bytes, spans: Sequence[tuple[int, int]], signer: str | None
) -> tuple[Signed, tuple[str, ...]]:
    """The signed content and the signature of a multipart/signed whose parts lie at `spans`.

    The content is the first part's bytes exactly as sent, its header lines included, with
    CRLF line endings: re-serialising the parsed part would break a real signature.
    """
    start, end = spans[0]
    content = canonical_crlf(buf[start:end])
    if len(spans) < 2:
        return Signed("pgp-mime", content, None, signer), ("multipart/signed: no signature part",)
    start, end = spans[1]
    block = parse_header_block(buf, start, end)
    decoded = decode_transfer(memoryview(buf)[block.body_start : end],
                              read_entity(block).transfer_encoding)
    defects = tuple(f"multipart/signed: signature: {defect}" for defect in decoded.defects)
    return Signed("pgp-mime", content, decoded.data, signer), defects


def cleartext_signed(text: str, signer: str | None) -> Signed | None:
    """The first cleartext-signed block of a text body (BEGIN line to END line) as UTF-8."""
    begin = _CLEARTEXT_BEGIN.search(text)
    if begin is None:
        return None
    end = _CLEARTEXT_END.search(text, begin.end())
    if end is None:
        return None
    return Signed("inline", text[begin.start() : end.end()].encode("utf-8"), None, signer)


def signer_address(value: str | None) -> str | None:
    """The addr-spec of a From value holding exactly one mailbox, lower-case; else None.

    Comments and quoted display names are skipped before the address is looked for, and RFC 2047
    words are left encoded, so a display name can never pass for the address.
    """
    if value is None or len(value) > _MAX_FROM:
        return None
    if not value.isascii():
        value, _ = decode_fallback(value.encode("latin-1", "replace"))
    kept: list[str] = []  # the value without comments; quoted strings kept whole
    angles: list[int] = []  # where "<" and ">" are in `kept`, outside quotes
    depth, quoted, escaped = 0, False, False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif depth:
            depth += (char == "(") - (char == ")")
            continue
        elif char == "(":
            depth = 1
            char = " "
        elif char == '"':
            quoted = True
        elif char in "<>":
            angles.append(len(kept))
        elif char in ",;" and len(angles) != 1:
            return None  # a second mailbox or a group: no single signer
        if not depth or char == " ":
            kept.append(char)
    if quoted or depth:
        return None
    text = "".join(kept)
    if angles:
        if len(angles) != 2 or text[angles[0]] != "<" or text[angles[1]] != ">":
            return None
        address = text[angles[0] + 1 : angles[1]].strip()
        if address.startswith("@"):  # an obsolete source route: "<@relay:user@host>"
            address = address.partition(":")[2]
    else:
        address = text.strip()
    local, at, domain = address.rpartition("@")
    if not at or not _LOCAL.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        return None
    return scrub_surrogates(address.lower())


# --- the X-AgentMail-Attachments manifest -----------------------------------------------------


def _json_value(text: str) -> tuple[bool, Any]:
    """(parsed, value): the text as JSON, else with its RFC 2047 words decoded first."""
    candidates = [text]
    if "=?" in text:
        candidates.append(decode_encoded_words(text))
    for candidate in candidates:
        try:
            return True, json.loads(candidate)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the stack
            continue
    return False, None


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    text = _CONTROL.sub("", scrub_surrogates(value)).strip()[:limit]
    return text or None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None


def _encryption(value: Any) -> Encryption | None:
    if not isinstance(value, dict):
        return None
    algorithm = _text(value.get("algorithm"), _MAX_TOKEN)
    form = _text(value.get("format"), _MAX_TOKEN)
    return Encryption((algorithm or _DEFAULT_ENCRYPTION.algorithm).lower(),
                      (form or _DEFAULT_ENCRYPTION.format).lower())


def _entry(item: Any) -> ManifestEntry | None:
    if not isinstance(item, dict):
        return None
    raw_name = item.get("file_name")
    if isinstance(raw_name, str) and "=?" in raw_name:
        raw_name = decode_encoded_words(raw_name)
    name = _text(raw_name, _MAX_NAME)
    if name is None:
        return None
    content_type = _text(item.get("content_type"), _MAX_NAME)
    return ManifestEntry(
        file_name=name,
        content_type=content_type.lower() if content_type else None,
        encrypted=_flag(item.get("encrypted")),
        encryption=_encryption(item.get("encryption")),
    )


def _header_value(raw: bytes, header_end: int) -> tuple[bytes | None, list[str]]:
    """The first manifest field's raw value in raw[:header_end], unfolded, and its defects."""
    found = _MANIFEST_FIELD.search(raw, 0, header_end)
    if found is None:
        return None, []
    start = found.end()
    window = min(header_end, start + MAX_MANIFEST_BYTES + 1)
    stop = _VALUE_END.search(raw, start, window)
    end = window if stop is None else stop.start()
    if end - start > MAX_MANIFEST_BYTES:
        return None, [f"{MANIFEST_HEADER}: longer than {MAX_MANIFEST_BYTES} bytes, ignored"]
    defects = []
    if _MANIFEST_FIELD.search(raw, end, header_end) is not None:
        defects.append(f"{MANIFEST_HEADER}: more than one field, the first is used")
    return _FOLD.sub(b"", raw[start:end]), defects


def read_manifest(
    raw: bytes, header_end: int
) -> tuple[tuple[ManifestEntry, ...] | None, list[str]]:
    """The entries of the top message's X-AgentMail-Attachments field (headers: raw[:header_end]).

    Lenient: one object stands for an array of one, unknown keys are ignored, "true"/"false"
    strings are booleans. An entry without a usable file_name is skipped with a defect; a value
    that is not JSON, or holds no objects, gives None and one defect. At most
    MAX_MANIFEST_ENTRIES entries of at most MAX_MANIFEST_BYTES of header are read.
    """
    value_bytes, defects = _header_value(raw, header_end)
    if value_bytes is None:
        return None, defects
    text = value_bytes.decode("latin-1")
    if not text.isascii():
        text, _ = decode_fallback(value_bytes)  # a raw 8-bit header is mostly UTF-8
    parsed, value = _json_value(text)
    if not parsed:
        return None, [*defects, f"{MANIFEST_HEADER}: not JSON"]
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or (items and not any(isinstance(i, dict) for i in items)):
        return None, [*defects, f"{MANIFEST_HEADER}: not a JSON array of objects"]
    if len(items) > MAX_MANIFEST_ENTRIES:
        defects.append(f"{MANIFEST_HEADER}: {len(items) - MAX_MANIFEST_ENTRIES} entries beyond "
                       f"{MAX_MANIFEST_ENTRIES} ignored")
    entries: list[ManifestEntry] = []
    skipped: list[int] = []
    for number, item in enumerate(items[:MAX_MANIFEST_ENTRIES]):
        entry = _entry(item)
        if entry is None:
            skipped.append(number)
        else:
            entries.append(entry)
    if skipped:
        shown = ", ".join(str(number) for number in skipped[:_DEFECTS_PER_KIND])
        more = ", …" if len(skipped) > _DEFECTS_PER_KIND else ""
        defects.append(f"{MANIFEST_HEADER}: {len(skipped)} entries without a usable file_name "
                       f"skipped (entry {shown}{more})")
    return tuple(entries), defects


def _claim(candidates: list[int] | None, taken: set[int]) -> int | None:
    # Candidates are kept last-first, so each is popped once however many entries ask.
    while candidates:
        index = candidates.pop()
        if index not in taken:
            taken.add(index)
            return index
    return None


def apply_manifest(
    parts: Sequence[Part], manifest: Sequence[ManifestEntry]
) -> tuple[tuple[Part, ...], list[str]]:
    """Flag the attachments that manifest entries say are encrypted; name entries matching none.

    An entry matches an attachment not matched yet whose file_name or original_file_name is
    its name: exactly for every entry first, then ignoring case; top-level attachments before
    those inside a .eml or TNEF, then document order. The bytes outrank the claim: a part found
    to be ciphertext keeps its own `encryption`, and `"encrypted": false` unflags nothing.
    """
    exact: dict[str, list[int]] = {}
    folded: dict[str, list[int]] = {}
    order = sorted(range(len(parts)), key=lambda i: (parts[i].parent is not None, i))
    for candidate in reversed(order):
        part = parts[candidate]
        names = {name for name in (part.file_name, part.original_file_name) if name}
        for name in names:
            exact.setdefault(name, []).append(candidate)
        for name in {name.casefold() for name in names}:
            folded.setdefault(name, []).append(candidate)
    taken: set[int] = set()
    matched: list[int | None] = [_claim(exact.get(e.file_name), taken) for e in manifest]
    for number, entry in enumerate(manifest):
        if matched[number] is None:
            matched[number] = _claim(folded.get(entry.file_name.casefold()), taken)
    out = list(parts)
    missing: list[str] = []
    for entry, index in zip(manifest, matched, strict=True):
        if index is None:
            missing.append(entry.file_name)
        elif entry.encrypted and not out[index].encrypted:
            out[index] = replace(out[index], encrypted=True,
                                 encryption=entry.encryption or _DEFAULT_ENCRYPTION)
    defects = [f"{MANIFEST_HEADER}: no attachment named {name[:_SHOWN]!r}"
               for name in missing[:_DEFECTS_PER_KIND]]
    if len(missing) > _DEFECTS_PER_KIND:
        defects.append(f"{MANIFEST_HEADER}: {len(missing) - _DEFECTS_PER_KIND} more entries "
                       "match no attachment")
    return tuple(out), defects
