"""Fuzzing extract_message: mutated real messages and generated MIME trees.

What must hold on any input: no exception escapes, no "internal error" defect, the records are
consistent; for a generated tree, every leaf put in comes out (as an attachment, a body, or
inside the .eml or opaque part that holds it) unless a limit rejected it and said so; and the
cost (calls made, CPU time: tests/cost.py) grows linearly with the input. Runs derandomised so
the suite never flakes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extractors import Extraction, Limits, Part, extract_message
from tests.cost import assert_linear

CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"
ABSENT = f"the shared corpus is not at {CORPUS}; it lives beside the repository"
# Mutations start from this many corpus messages, every n-th of the sorted list: a fixed,
# varied sample that keeps each example fast (files over 200 kB are left out).
SAMPLE = 48
SAMPLE_MAX_BYTES = 200_000

FUZZ = settings(deadline=None, max_examples=500, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _as_relayed(raw: bytes) -> bytes:
    crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return crlf if crlf.endswith(b"\r\n") else crlf + b"\r\n"


@functools.cache
def _sample() -> list[bytes]:
    assert (CORPUS / "messages").is_dir(), ABSENT
    paths = sorted(p for p in (CORPUS / "messages").rglob("*")
                   if p.is_file() and p.stat().st_size <= SAMPLE_MAX_BYTES)
    step = max(1, len(paths) // SAMPLE)
    return [_as_relayed(p.read_bytes()) for p in paths[::step][:SAMPLE]]


def _extract(raw: bytes, limits: Limits | None = None) -> Extraction:
    """extract_message, plus what every result must satisfy whatever the input."""
    result = extract_message(raw, limits or Limits())
    assert [d for d in result.defects if d.startswith("internal")] == []
    for number, part in enumerate(result.attachments):
        assert part.index == number
        assert part.parent is None or 0 <= part.parent < part.index
        if part.outcome != "rejected":
            assert (part.size, part.sha256) == (len(part.data),
                                                hashlib.sha256(part.data).hexdigest())
    return result


# ---------------------------------------------------------------- mutated real messages

_DELIMITER_LINE = re.compile(rb"(?m)^--[^\r\n]+\r?\n")
_CLOSE_LINE = re.compile(rb"(?m)^--[^\r\n]+--[ \t]*\r?\n")
_BASE64_LINE = re.compile(rb"(?m)^[A-Za-z0-9+/]{16,}={0,2}\r?$")
_SPICE = [b"\r\n", b"\n", b"\r", b"--", b"\r\n\r\n", b"=", b"=\r\n", b"\x00", b"\xff\xfe",
          b"Content-Type: multipart/mixed; boundary=x\r\n", b"--x\r\n", b"--x--\r\n",
          b"Content-Transfer-Encoding: base64\r\n", b"begin 644 a.bin\r\n", b"=?utf-8?b?",
          b"; filename*0*=utf-8''%e2%82; filename*1=x", b"Content-Type: message/rfc822\r\n\r\n"]


def _line_starts(raw: bytes) -> list[int]:
    return [0, *(m.end() for m in re.finditer(rb"\n", raw[:-1]))]


@st.composite
def _mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    """One byte-level or structure-level change to a message."""
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate_boundary",
                                 "break_base64", "drop_close", "drop_all_closes"]))
    at = draw(st.integers(0, max(0, len(raw) - 1)))
    if kind == "flip" and raw:
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]
    if kind == "insert":
        spice = draw(st.one_of(st.sampled_from(_SPICE), st.binary(min_size=1, max_size=32)))
        return raw[:at] + spice + raw[at:]
    if kind == "delete":
        return raw[:at] + raw[at + draw(st.integers(1, 4096)):]
    if kind == "truncate":
        return raw[:at]
    if kind == "duplicate_boundary":
        lines = [m.group() for m in _DELIMITER_LINE.finditer(raw)]
        if lines:
            where = draw(st.sampled_from(_line_starts(raw)))
            return raw[:where] + draw(st.sampled_from(lines)) + raw[where:]
    if kind == "break_base64":
        spans = [m.span() for m in _BASE64_LINE.finditer(raw)]
        if spans:
            start, end = draw(st.sampled_from(spans))
            cut = draw(st.integers(start, end))
            junk = draw(st.sampled_from([b"!", b"=", b"==", b"*", b"\x80", b"", b"A"]))
            return raw[:cut] + junk + raw[cut + draw(st.integers(0, 3)):]
    if kind == "drop_close":
        spans = [m.span() for m in _CLOSE_LINE.finditer(raw)]
        if spans:
            start, end = draw(st.sampled_from(spans))
            return raw[:start] + raw[end:]
    if kind == "drop_all_closes":
        return _CLOSE_LINE.sub(b"", raw)
    return raw


@pytest.mark.skipif(not (CORPUS / "messages").is_dir() and not os.environ.get("CI"),
                    reason=ABSENT)
@FUZZ
@given(data=st.data())
def test_mutated_real_messages_never_make_extraction_raise(data: st.DataObject) -> None:
    raw = data.draw(st.sampled_from(_sample()), label="message")
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        raw = data.draw(_mutation(raw))
    limits = data.draw(st.sampled_from([Limits(), Limits(max_depth=2, max_parts=5,
                                                         max_attachment_size=1000)]))
    _extract(raw, limits)


# ---------------------------------------------------------------- generated MIME trees


@dataclass(frozen=True)
class Leaf:
    content_type: str
    payload: bytes  # the decoded bytes
    encoding: str
    file_name: str | None
    disposition: str | None
    name_style: str  # how the file name is written: plain, rfc2231 or rfc2047


@dataclass(frozen=True)
class Multipart:
    subtype: str
    boundary: str
    children: tuple[Node, ...]
    preamble: bytes
    epilogue: bytes
    folded: bool


@dataclass(frozen=True)
class Embedded:
    """A message/rfc822 part holding a whole message."""

    body: Node
    encoding: str
    subject: str


Node = Leaf | Multipart | Embedded

_TEXT_TYPES = ["text/plain", "text/html"]
_BINARY_TYPES = ["application/octet-stream", "image/png", "application/pdf", "text/csv",
                 "application/ms-tnef", "application/pkcs7-mime", "message/delivery-status",
                 "application/x-unknown"]
# Identity-encoded content avoids "=", so it can never hold a delimiter (all contain "=_").
_LINE_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="="),
                     max_size=80)
# Any text a header can carry (control characters would end it).
_NAME = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
# RFC 2046 bchars; each boundary gets a unique "=_<n>" suffix when rendered.
_BOUNDARY = st.text("abcXYZ019'()+_,-./:=? ", min_size=1, max_size=50)


@st.composite
def _leaf(draw: st.DrawFn) -> Leaf:
    content_type = draw(st.sampled_from(_TEXT_TYPES + _BINARY_TYPES))
    textual = content_type in _TEXT_TYPES or draw(st.booleans())
    if textual:
        payload = "\r\n".join(draw(st.lists(_LINE_TEXT, max_size=12))).encode()
        encodings = ["7bit", "8bit", "quoted-printable", "base64"]
    else:
        payload = draw(st.binary(max_size=3000))
        encodings = ["quoted-printable", "base64"]
    named = draw(st.booleans())
    return Leaf(
        content_type=content_type,
        payload=payload,
        encoding=draw(st.sampled_from(encodings)),
        file_name=draw(_NAME) if named else None,
        disposition=draw(st.sampled_from([None, "inline", "attachment"])),
        name_style=draw(st.sampled_from(["plain", "rfc2231", "rfc2047"])),
    )


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    multipart = st.builds(
        Multipart,
        subtype=st.sampled_from(["mixed", "alternative", "related", "parallel", "digest",
                                 "signed", "x-unknown"]),
        boundary=_BOUNDARY,
        children=st.lists(children, max_size=5).map(tuple),
        preamble=st.sampled_from([b"", b"This is a multi-part message in MIME format.\r\n"]),
        epilogue=st.sampled_from([b"", b"epilogue\r\n", b"\r\n"]),
        folded=st.booleans(),
    )
    embedded = st.builds(Embedded, body=children, encoding=st.sampled_from(["7bit", "base64"]),
                         subject=st.text(max_size=30))
    return st.one_of(multipart, embedded)


_TREES = st.recursive(_leaf(), _extend, max_leaves=24)


def _deep(depth: int) -> st.SearchStrategy[Node]:
    """A leaf under `depth` levels of multiparts and embedded messages, one child each."""
    @st.composite
    def build(draw: st.DrawFn) -> Node:
        node: Node = draw(_leaf())
        for level in range(depth):
            if draw(st.booleans()):
                node = Embedded(node, "7bit", f"level {level}")
            else:
                node = Multipart("mixed", f"deep{level}", (node,), b"", b"", False)
        return node
    return build()


def _encode(payload: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.encodebytes(payload).replace(b"\n", b"\r\n").removesuffix(b"\r\n")
    if encoding == "quoted-printable":
        # CR and LF in binary data come out as =0D =0A; every newline left is a soft break.
        return binascii.b2a_qp(payload, istext=False).replace(b"\n", b"\r\n")
    return payload


def _name_params(leaf: Leaf, key: str) -> str:
    name = leaf.file_name
    if name is None:
        return ""
    if leaf.name_style == "rfc2231":
        return f"; {key}*=utf-8''{quote(name, safe='')}"
    if leaf.name_style == "rfc2047":
        word = base64.b64encode(name.encode()).decode()
        return f'; {key}="=?utf-8?b?{word}?="'
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'; {key}="{escaped}"'


# The sha256 of a part that holds leaves, filled in once the part is rendered.
Holder = list[str]


@dataclass
class Expected:
    """One leaf as rendered, and the parts that hold it (outermost first)."""

    leaf: Leaf
    holders: tuple[Holder, ...]
    in_message: bool  # inside an embedded message


class Renderer:
    """Turns a tree into bytes with CRLF line ends, noting where every leaf went."""

    def __init__(self) -> None:
        self.expected: list[Expected] = []
        self.boundaries = 0

    def message(self, body: Node, subject: str, holders: tuple[Holder, ...] = (),
                in_message: bool = False) -> bytes:
        header = (f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject!r}\r\n"
                  "MIME-Version: 1.0\r\n").encode()
        return header + self.entity(body, holders, in_message)

    def entity(self, node: Node, holders: tuple[Holder, ...], in_message: bool) -> bytes:
        """Headers, blank line and content of one entity, without a trailing line break."""
        if isinstance(node, Leaf):
            self.expected.append(Expected(node, holders, in_message))
            charset = "; charset=utf-8" if node.content_type in _TEXT_TYPES else ""
            head = (f"Content-Type: {node.content_type}{charset}{_name_params(node, 'name')}\r\n"
                    f"Content-Transfer-Encoding: {node.encoding}\r\n")
            if node.disposition:
                head += (f"Content-Disposition: {node.disposition}"
                         f"{_name_params(node, 'filename')}\r\n")
            return head.encode() + b"\r\n" + _encode(node.payload, node.encoding)
        holder: Holder = []
        if isinstance(node, Embedded):
            inner = self.message(node.body, node.subject, (*holders, holder), True)
            holder.append(hashlib.sha256(inner).hexdigest())  # the .eml's decoded bytes
            return (f"Content-Type: message/rfc822\r\n"
                    f"Content-Transfer-Encoding: {node.encoding}\r\n\r\n").encode() + \
                _encode(inner, node.encoding)
        self.boundaries += 1
        boundary = f"{node.boundary}=_{self.boundaries}".encode()
        fold = b";\r\n\t" if node.folded else b"; "
        whole = b"Content-Type: multipart/" + node.subtype.encode() + fold + \
            b'boundary="' + boundary + b'"\r\n\r\n' + node.preamble
        for child in node.children:
            whole += b"--" + boundary + b"\r\n" + self.entity(
                child, (*holders, holder), in_message) + b"\r\n"
        whole += b"--" + boundary + b"--\r\n" + node.epilogue
        holder.append(hashlib.sha256(whole).hexdigest())  # as kept whole beyond max_depth
        return whole


def _found(expected: Expected, result: Extraction, ours: dict[str, Part]) -> bool:
    leaf = expected.leaf
    if hashlib.sha256(leaf.payload).hexdigest() in ours:
        return True
    body_like = leaf.content_type in _TEXT_TYPES and leaf.file_name is None \
        and leaf.disposition != "attachment"
    if body_like and not expected.in_message:
        bodies = [b for b in (result.text_body, result.html_body) if b is not None]
        if any(b.text == leaf.payload.decode() for b in bodies):
            return True
    for holder in expected.holders:
        part = ours.get(holder[0])
        if part is None:
            continue
        limited = part.outcome == "rejected" or "depth_limit" in (*part.defects, part.reason)
        # The bodies of an embedded message stay inside its .eml (SPEC §5); anything may stay
        # inside a part a limit kept whole or rejected.
        if limited or (body_like and expected.in_message):
            return True
    return False


def _lost(tree: Node, limits: Limits) -> list[Leaf]:
    """The leaves of `tree` that extraction neither lists nor keeps inside a part it lists."""
    renderer = Renderer()
    raw = renderer.message(tree, "generated")
    result = _extract(raw, limits)
    ours = {part.sha256: part for part in result.attachments}
    lost = [x.leaf for x in renderer.expected if not _found(x, result, ours)]
    # Beyond max_parts, one rejected summary part stands for the rest of the document (leaves
    # and containers alike), so which leaves it covers is not known one by one.
    summarised = [p for p in result.attachments if p.reason == "part_limit"]
    return [] if summarised and len(result.attachments) > limits.max_parts else lost


_LIMITS = st.one_of(
    st.just(Limits()),
    st.builds(Limits, max_attachment_size=st.integers(1, 4000), max_parts=st.integers(1, 30),
              max_depth=st.integers(1, 8)),
)


@FUZZ
@given(tree=_TREES, limits=_LIMITS)
def test_generated_trees_lose_no_part(tree: Node, limits: Limits) -> None:
    assert _lost(tree, limits) == []


@FUZZ
@given(data=st.data())
def test_deeply_nested_parts_are_kept_or_limited(data: st.DataObject) -> None:
    depth = data.draw(st.integers(1, 60), label="depth")
    tree = data.draw(_deep(depth), label="tree")
    max_depth = data.draw(st.integers(1, 40), label="max_depth")
    assert _lost(tree, Limits(max_depth=max_depth)) == []


@FUZZ
@given(tree=_TREES, limits=_LIMITS, data=st.data())
def test_mutated_generated_trees_never_make_extraction_raise(
        tree: Node, limits: Limits, data: st.DataObject) -> None:
    raw = Renderer().message(tree, "generated")
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        raw = data.draw(_mutation(raw))
    _extract(raw, limits)


# ---------------------------------------------------------------- linear cost


def _message(content_type: str, body: bytes, extra_headers: bytes = b"") -> bytes:
    return (b"From: a@example.org\r\nSubject: scale\r\nMIME-Version: 1.0\r\n" + extra_headers +
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)


def _wide(n: int) -> bytes:
    part = (b"--B\r\nContent-Type: application/octet-stream; name=p.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" +
            base64.encodebytes(bytes(range(256)) * 4).replace(b"\n", b"\r\n"))
    return _message('multipart/mixed; boundary="B"', part * (100 * n) + b"--B--\r\n")


def _near_misses(n: int) -> bytes:
    lines = b"--B not quite\r\n--BB\r\n--B-\r\n-- B\r\n" * (4000 * n)
    return _message('multipart/mixed; boundary="B"',
                    b"--B\r\nContent-Type: text/plain\r\n\r\n" + lines + b"--B--\r\n")


def _unclosed(n: int) -> bytes:
    # Nested multiparts none of which ever closes: each level ends where its parent ends.
    body = b"".join(b"--L%d\r\nContent-Type: multipart/mixed; boundary=L%d\r\n\r\n" % (i, i + 1)
                    for i in range(20))
    return _message("multipart/mixed; boundary=L0", body + b"x" * (200_000 * n))


def _headers(n: int) -> bytes:
    fields = b"".join(b"X-Field-%d: value %d\r\n\t folded\r\n" % (i, i) for i in range(20_000 * n))
    return _message("text/plain", b"body\r\n", fields)


def _long_lines(n: int) -> bytes:
    body = (b"--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
            b"a" * (150_000 * n) + b"\r\n--B\r\nContent-Type: application/pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b"QUFB" * (40_000 * n) +
            b"\r\n--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: "
            b"quoted-printable\r\n\r\n" + b"=41=\r\n" * (30_000 * n) + b"\r\n--B--\r\n")
    return _message('multipart/mixed; boundary="B"', body)


def _embedded(n: int) -> bytes:
    inner = _wide(1)
    part = b"--O\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n"
    return _message("multipart/mixed; boundary=O", part * (2 * n) + b"--O--\r\n")


@pytest.mark.parametrize("build", [_wide, _near_misses, _unclosed, _headers, _long_lines,
                                   _embedded], ids=lambda f: f.__name__.strip("_"))
def test_extraction_cost_grows_linearly(build: Callable[[int], bytes]) -> None:
    small, large = build(1), build(8)
    assert len(large) > 7 * len(small)
    _extract(small)  # the invariants hold here too
    assert_linear(lambda raw: extract_message(raw, Limits()), small, large)
