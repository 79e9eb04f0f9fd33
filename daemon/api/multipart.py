"""A streaming reader of `multipart/form-data` request bodies (RFC 7578), for uploads.

Parts are read one after another from the body's chunks as they arrive: a part's headers are
bounded, its data is handed on in pieces and never held whole, so an upload of any size costs
the same memory. It never touches a file or a socket itself; a malformed body raises
`MultipartError` (a 400 for the caller), never anything else.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message

MAX_HEADER_BYTES = 16 * 1024  # of one part's header block
# RFC 2046: 1 to 70 of these characters, a space allowed anywhere but at the end.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]")


class MultipartError(Exception):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True)
class Part:
    """One part's headers: its form field name, the file name if it has one, its type."""

    name: str
    file_name: str | None
    content_type: str | None


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a `multipart/form-data` Content-Type; MultipartError for anything else."""
    msg = Message()
    msg["content-type"] = content_type or ""
    if msg.get_content_type() != "multipart/form-data":
        raise MultipartError("the body must be multipart/form-data")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not _BOUNDARY_RE.fullmatch(boundary):
        raise MultipartError("multipart/form-data without a valid boundary")
    return boundary.encode("ascii")


def _parse_headers(block: bytes) -> Part:
    msg = Message()
    for line in block.decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise MultipartError("a part header line has no name")
        msg[name.strip()] = value.strip()
    if msg.get_content_disposition() != "form-data":
        raise MultipartError("a part without Content-Disposition: form-data")
    field = msg.get_param("name", header="content-disposition")
    if not isinstance(field, str):
        raise MultipartError("a part without a field name")
    # RFC 2231 forms (filename*=) come back as tuples: decoded by the email package.
    file_name = msg.get_filename()
    content_type = msg["content-type"]
    return Part(field, file_name, str(content_type).strip() if content_type else None)


class MultipartReader:
    """`async for part in reader.parts()`: then `reader.data()` or `reader.read(limit)` for its
    bytes (a part not read is skipped when the next one is asked for)."""

    def __init__(self, chunks: AsyncIterator[bytes], boundary: bytes) -> None:
        self._chunks = chunks
        # The body starts with "--boundary": seen as a delimiter once a CRLF is put in front.
        self._delimiter = b"\r\n--" + boundary
        self._buf = bytearray(b"\r\n")
        self._eof = False
        self._in_part = False
        self._done = False

    async def _fill(self) -> bool:
        """Append the next chunk; False at the end of the body."""
        while not self._eof:
            chunk = await anext(self._chunks, None)
            if chunk is None:
                self._eof = True
            elif chunk:
                self._buf += chunk
                return True
        return False

    async def _skip_to_delimiter(self) -> None:
        while True:
            i = self._buf.find(self._delimiter)
            if i >= 0:
                del self._buf[:i + len(self._delimiter)]
                return
            keep = len(self._delimiter) - 1
            if len(self._buf) > keep:
                del self._buf[:len(self._buf) - keep]
            if not await self._fill():
                raise MultipartError("the body ends before its closing boundary")

    async def _need(self, n: int) -> None:
        while len(self._buf) < n:
            if not await self._fill():
                raise MultipartError("the body ends before its closing boundary")

    async def parts(self) -> AsyncIterator[Part]:
        """Each part's headers, in order, up to the closing boundary."""
        if not self._done:
            await self._skip_to_delimiter()  # the preamble
        while not self._done:
            await self._need(2)
            if self._buf[:2] == b"--":
                self._done = True
                return
            # Transport padding (spaces, tabs) may follow a boundary before its CRLF.
            while True:
                end = self._buf.find(b"\r\n")
                if end >= 0:
                    break
                if len(self._buf) > 256 or not await self._fill():
                    raise MultipartError("a boundary line does not end")
            if self._buf[:end].strip(b" \t"):
                raise MultipartError("unexpected bytes after a boundary")
            del self._buf[:end + 2]
            while True:
                end = self._buf.find(b"\r\n\r\n")
                if end >= 0:
                    break
                if len(self._buf) > MAX_HEADER_BYTES or not await self._fill():
                    raise MultipartError("a part's headers are too long or never end")
            if end > MAX_HEADER_BYTES:
                raise MultipartError("a part's headers are too long")
            part = _parse_headers(bytes(self._buf[:end]))
            del self._buf[:end + 4]
            self._in_part = True
            yield part
            if self._in_part:  # not read by the caller: skip its data
                async for _ in self.data():
                    pass

    async def data(self) -> AsyncIterator[bytes]:
        """The current part's bytes, in pieces, up to its closing delimiter."""
        if not self._in_part:
            return
        while True:
            i = self._buf.find(self._delimiter)
            if i >= 0:
                piece = bytes(self._buf[:i])
                del self._buf[:i + len(self._delimiter)]
                self._in_part = False
                if piece:
                    yield piece
                return
            # Everything but a tail that could be the start of the delimiter is data.
            safe = len(self._buf) - (len(self._delimiter) - 1)
            if safe > 0:
                piece = bytes(self._buf[:safe])
                del self._buf[:safe]
                yield piece
            if not await self._fill():
                raise MultipartError("the body ends inside a part")

    async def read(self, limit: int) -> bytes:
        """The current part's bytes whole, for small form fields; MultipartError over `limit`."""
        out = bytearray()
        async for piece in self.data():
            out += piece
            if len(out) > limit:
                raise MultipartError(f"a form field is over {limit} bytes")
        return bytes(out)
