"""SMTP DATA framing with bytes operations: the end marker found and dot-stuffing undone per chunk.

Pure (no I/O), so it can be fed chunks split anywhere and tested that way. It holds back only
a few bytes between chunks: what may begin the end marker, or a CRLF-dot whose dot must still go.
"""

from __future__ import annotations

_END = b"\r\n.\r\n"


def _safe_cut(buf: bytes) -> int:
    """How much of `buf` (holding no end marker) can be unstuffed and passed on now."""
    cut = len(buf) - 4
    if cut <= 0:
        return 0
    for at in (cut - 2, cut - 1):
        if at >= 0 and buf.startswith(b"\r\n.", at):
            return at
    return cut


class Unstuffer:
    """Turns the DATA stream into message bytes, one chunk at a time.

    `feed` returns the content that is final so far; once the end marker has been seen,
    `done` is true and `leftover` holds the bytes after it (pipelined commands).
    """

    def __init__(self) -> None:
        # The CRLF that ended the DATA command starts the first line; it is not content.
        self._buf = b"\r\n"
        self._skip = 2
        self.done = False
        self.leftover = b""

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            raise ValueError("the end marker was already seen")
        buf = self._buf + chunk
        if buf.find(b".") < 0:
            # No dot at all (base64 and most attachment bytes): neither the end marker nor a
            # stuffed dot can be here. One memchr instead of two multi-byte scans, which cost
            # 1 ms per MB between them.
            cut = _safe_cut(buf)
            out = buf[:cut]
        else:
            end = buf.find(_END)
            if end >= 0:
                self.done = True
                self.leftover = buf[end + 5:]
                cut = end + 2  # the CRLF ending the last line is content
            else:
                cut = _safe_cut(buf)
            out = buf[:cut].replace(b"\r\n.", b"\r\n")
        self._buf = buf[cut:]
        if self._skip:
            taken = min(self._skip, len(out))
            out, self._skip = out[taken:], self._skip - taken
        return out
