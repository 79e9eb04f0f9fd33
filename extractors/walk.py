"""A bytes-level MIME walker: yields the leaf entities of a message in document order.

An explicit stack (never recursion) and one index of each buffer's "--" lines, shared by every
nesting level, keep it linear in the input however deep the nesting. It never decodes bodies and
never raises: broken structure becomes a defect. Paths follow IMAP; a single-part message's
content is part "1".
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from extractors.entity import Entity, read_entity
from extractors.headers import HeaderBlock, parse_header_block
from extractors.records import Security
from extractors.security import entity_security, stronger

EMBEDDED_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global", "message/news"})


@dataclass(frozen=True)
class Leaf:
    """One leaf entity: where its bytes are, what its headers say, and where it sits."""

    buf: bytes
    lines: DelimiterLines  # the "--" lines of buf, shared by everything walked in it
    start: int  # start of the entity's header block in buf
    body_start: int
    end: int
    entity: Entity
    path: str
    depth: int  # number of enclosing containers (multiparts and messages)
    scope: int  # 0 for the top message, then one number per embedded message
    parent: int | None  # attachment index of the enclosing .eml, None in the top message
    # Where a body may be: any part of an alternative, a related root, the first part of mixed.
    body_candidate: bool
    opaque: bool = False  # a container kept whole because it is nested beyond max_depth
    encrypted: bool = False  # the payload of a multipart/encrypted: ciphertext, kept opaque
    can_descend: bool = False  # an embedded message whose content may still be walked
    defects: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Pending:
    """An entity whose header block has not been read yet."""

    buf: bytes
    lines: DelimiterLines
    start: int
    end: int
    path: str  # own path; for a message root, the path of the message that holds it
    depth: int
    scope: int
    parent: int | None
    body_candidate: bool
    default_type: str = "text/plain"
    message_root: bool = False
    encrypted: bool = False


def _message_root(
    buf: bytes,
    lines: DelimiterLines,
    start: int,
    end: int,
    path: str,
    depth: int,
    scope: int,
    parent: int | None,
) -> _Pending:
    return _Pending(buf, lines, start, end, path, depth, scope, parent, True, message_root=True)


def _join(path: str, number: int) -> str:
    return f"{path}.{number}" if path else str(number)


def _line_key(text: bytes) -> bytes:
    # A delimiter line is "--" boundary ["--"] transport-padding CRLF (RFC 2046 §5.1.1).
    return text.removesuffix(b"\r").rstrip(b" \t")


class DelimiterLines:
    """Every line of one buffer that starts with "--", by its text: built once on first use.

    Searching each multipart's boundary with `bytes.find` would rescan a nested multipart's
    bytes once per enclosing level (quadratic in the depth); this index is one pass for all.
    """

    def __init__(self, buf: bytes) -> None:
        self._buf = buf
        self._lines: dict[bytes, list[tuple[int, int]]] | None = None

    def _build(self) -> dict[bytes, list[tuple[int, int]]]:
        buf = self._buf
        lines: dict[bytes, list[tuple[int, int]]] = {}
        start = 0 if buf.startswith(b"--") else buf.find(b"\n--") + 1 or -1
        while start >= 0:
            newline = buf.find(b"\n", start)
            stop = len(buf) if newline < 0 else newline
            lines.setdefault(_line_key(buf[start + 2 : stop]), []).append((start, stop + 1))
            start = -1 if newline < 0 else buf.find(b"\n--", newline) + 1 or -1
        return lines

    def find(self, boundary: bytes, pos: int, end: int) -> tuple[int, int, bool] | None:
        """The first delimiter line of boundary in buf[pos:end]: (start, next line, is_close)."""
        if self._lines is None:
            self._lines = self._build()
        key = _line_key(boundary)
        best: tuple[int, int, bool] | None = None
        for text, is_close in ((key, False), (key + b"--", True)):
            found = self._lines.get(text, [])
            at = bisect.bisect_left(found, (pos, -1))
            if at == len(found):
                continue
            start, after = found[at]
            if start < end and (best is None or start < best[0]):
                best = (start, min(after, end), is_close)
        return best


def _content_end(buf: bytes, start: int, delimiter_start: int) -> int:
    # The line break before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
    end = delimiter_start
    if end > start and buf[end - 1] == 0x0A:
        end -= 1
        if end > start and buf[end - 1] == 0x0D:
            end -= 1
    return end


class _Frame:
    """An open multipart on the walk stack, handing out its children one at a time."""

    def __init__(self, owner: _Pending, entity: Entity, body_start: int, boundary: bytes) -> None:
        self.owner = owner
        self.boundary = boundary
        self.subtype = entity.content_type.partition("/")[2]
        self.child_type = "message/rfc822" if self.subtype == "digest" else "text/plain"
        self.pos = body_start
        self.count = 0
        self.done = False
        self.defects: list[str] = []
        self.root = (
            self._related_root(entity.params.get("start")) if self.subtype == "related" else 0
        )
        # (start, end) in owner.buf of the first two children, kept for a signed multipart
        # whose signed content is wanted byte for byte; None when not wanted.
        self.spans: list[tuple[int, int]] | None = None

    def first_delimiter(self) -> bool:
        """Skip the preamble; False when no delimiter line exists at all."""
        found = self.owner.lines.find(self.boundary, self.pos, self.owner.end)
        if found is None:
            return False
        self.pos, self.done = found[1], found[2]
        if self.done:
            self.defects.append("multipart: no parts before the close delimiter")
        return True

    def _related_root(self, start: str | None) -> int:
        # RFC 2387: the root is the part whose Content-ID is `start`, else the first part.
        wanted = (start or "").strip().removeprefix("<").removesuffix(">").strip()
        if not wanted:
            return 0
        buf, end = self.owner.buf, self.owner.end
        found = self.owner.lines.find(self.boundary, self.pos, end)
        number = 0
        while found is not None and not found[2]:
            child_start = found[1]
            found = self.owner.lines.find(self.boundary, child_start, end)
            child_end = end if found is None else _content_end(buf, child_start, found[0])
            block = parse_header_block(buf, child_start, child_end)
            if read_entity(block).content_id == wanted:
                return number
            number += 1
        return 0

    def next_child(self) -> _Pending | None:
        """Return the next child entity, or None when the multipart is exhausted."""
        if self.done:
            return None
        owner = self.owner
        start = self.pos
        found = owner.lines.find(self.boundary, start, owner.end)
        if found is None:
            self.done = True
            self.defects.append("multipart: missing final boundary")
            end = owner.end
            if start >= end:
                return None
        else:
            end = _content_end(owner.buf, start, found[0])
            self.pos, self.done = found[1], found[2]
        number = self.count
        self.count += 1
        if self.spans is not None and number < 2:
            self.spans.append((start, end))
        candidate = owner.body_candidate and (self.subtype == "alternative" or number == self.root)
        # RFC 1847 §2.2: the first part of multipart/encrypted is control information, the
        # second the ciphertext; neither is a body.
        encrypted = self.subtype == "encrypted"
        return dataclasses.replace(
            owner,
            start=start,
            end=end,
            path=_join(owner.path, number + 1),
            depth=owner.depth + 1,
            body_candidate=candidate and not encrypted,
            default_type=self.child_type,
            message_root=False,
            encrypted=owner.encrypted or (encrypted and number >= 1),
        )


class MimeWalk:
    """Walks one message; `leaves()` yields its leaves, `enter_message` walks into a .eml."""

    def __init__(self, raw: bytes, max_depth: int) -> None:
        self._max_depth = max_depth
        self._stack: list[_Frame | _Pending] = [
            _message_root(raw, DelimiterLines(raw), 0, len(raw), "", 0, 0, None)
        ]
        self._scopes = 0
        self.top: HeaderBlock | None = None
        self.defects: list[str] = []
        # What the top message's own entities say about signing and encryption.
        self.pgp: Security | None = None
        self.smime: Security | None = None
        self._signed: _Frame | None = None  # the top message's first PGP/MIME multipart/signed

    def _defect(self, path: str, defect: str) -> None:
        self.defects.append(f"{path}: {defect}" if path else defect)

    def leaves(self) -> Iterator[Leaf]:
        """Yield every leaf in document order; enter_message may be called between yields."""
        while self._stack:
            item = self._stack[-1]
            if isinstance(item, _Frame):
                child = item.next_child()
                if child is None:
                    self._stack.pop()
                    for defect in item.defects:
                        self._defect(item.owner.path, defect)
                    continue
            else:
                self._stack.pop()
                child = item
            leaf = self._open(child)
            if leaf is not None:
                yield leaf

    def enter_message(self, leaf: Leaf, content: bytes | None, parent: int) -> None:
        """Walk an embedded message next, its parts numbered under leaf.path.

        `content` is its transfer-decoded bytes; None walks the leaf's body where it lies,
        which spares a copy per nesting level when the transfer encoding is the identity.
        """
        self._scopes += 1
        depth = leaf.depth + 1
        if content is None:
            root = _message_root(leaf.buf, leaf.lines, leaf.body_start, leaf.end, leaf.path,
                                 depth, self._scopes, parent)
        else:
            root = _message_root(content, DelimiterLines(content), 0, len(content), leaf.path,
                                 depth, self._scopes, parent)
        self._stack.append(root)

    def signed_parts(self) -> tuple[bytes, tuple[tuple[int, int], ...]] | None:
        """The buffer and the (start, end) of the content and signature parts (the signature
        missing when the multipart stops early) of the first PGP/MIME multipart/signed met in
        the top message, outside any embedded message; None when there is none.

        A part runs from the line after its delimiter to the line break before the next one,
        which belongs to that delimiter (RFC 2046 §5.1.1), its header lines included.
        """
        if self._signed is None or not self._signed.spans:
            return None
        return self._signed.owner.buf, tuple(self._signed.spans)

    def _open(self, item: _Pending) -> Leaf | None:
        block = parse_header_block(item.buf, item.start, item.end, top=item.message_root)
        defects = block.defects
        if item.message_root:
            if self.top is None:
                self.top = block
            for defect in block.defects:
                self._defect(item.path, defect)
            defects = ()
        entity = read_entity(block, item.default_type)
        path = _join(item.path, 1) if item.message_root else item.path
        security = self._note_security(entity) if item.scope == 0 else None
        if entity.maintype == "multipart":
            if item.depth >= self._max_depth:
                # The whole entity, headers included, so the kept bytes can still be parsed.
                return self._leaf(item, item.start, entity, path, (*defects, "depth_limit"), True)
            boundary = entity.params.get("boundary", "").rstrip(" \t")
            if boundary:
                frame = _Frame(item, entity, block.body_start,
                               boundary.encode("latin-1", "replace"))
                if frame.first_delimiter():
                    if security == ("pgp", "signed") and self._signed is None:
                        frame.spans = []
                        self._signed = frame
                    for defect in (*defects, *entity.defects):
                        self._defect(item.path, defect)
                    self._stack.append(frame)
                    return None
            why = "boundary not found" if boundary else "no boundary parameter"
            defect = f"{entity.content_type}: {why}, kept as text/plain"
            if item.message_root:
                self._defect(item.path, defect)
            entity = dataclasses.replace(
                entity, content_type="text/plain", defects=(*entity.defects, defect)
            )
        return self._leaf(item, block.body_start, entity, path, defects, False)

    def _note_security(self, entity: Entity) -> tuple[str, Security] | None:
        found = entity_security(entity)
        if found is None:
            return None
        kind, seen = found
        if kind == "pgp":
            self.pgp = stronger(self.pgp, seen)
        else:
            self.smime = stronger(self.smime, seen)
        return found

    def _leaf(
        self,
        item: _Pending,
        body_start: int,
        entity: Entity,
        path: str,
        defects: tuple[str, ...],
        opaque: bool,
    ) -> Leaf:
        return Leaf(
            buf=item.buf,
            lines=item.lines,
            start=item.start,
            body_start=body_start,
            end=item.end,
            entity=entity,
            path=path,
            depth=item.depth,
            scope=item.scope,
            parent=item.parent,
            body_candidate=item.body_candidate and not opaque,
            opaque=opaque,
            encrypted=item.encrypted,
            can_descend=(
                entity.content_type in EMBEDDED_MESSAGE_TYPES and item.depth < self._max_depth
            ),
            defects=(*defects, *entity.defects),
        )
