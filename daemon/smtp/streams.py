"""The two things the front needs from asyncio's StreamReader that it offers no method for.

Putting bytes back at the front (what a client pipelined after the PROXY header or after DATA's
end marker belongs to the command loop) and widening the buffer while DATA streams. Both touch
the reader's private `_buffer` (a bytearray) and `_limit`, here and nowhere else (checked
against Python 3.11's asyncio/streams.py). Nothing else here: no reading, no policy.
"""

from __future__ import annotations

import asyncio


def unread(reader: asyncio.StreamReader, data: bytes) -> None:
    """Put `data` back in front of what `reader` holds, for the next read to return first."""
    reader._buffer[0:0] = data  # type: ignore[attr-defined]  # asyncio has no unread


def widen(reader: asyncio.StreamReader, limit: int) -> int:
    """Raise the reader's line bound and buffer size to at least `limit`; the previous value.

    The buffer pauses the transport above twice the limit, so aiosmtpd's limit (one command
    line) would pause it every two kilobytes of DATA; the caller gives the previous value to
    `restore` after DATA, so command lines stay bounded.
    """
    previous: int = reader._limit  # type: ignore[attr-defined]  # asyncio has no setter
    reader._limit = max(previous, limit)  # type: ignore[attr-defined]
    return previous


def restore(reader: asyncio.StreamReader, limit: int) -> None:
    """Give the reader back the limit `widen` returned."""
    reader._limit = limit  # type: ignore[attr-defined]
