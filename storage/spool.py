"""Spooling: bytes on their way into the object store, held in memory or, when large, in a file.

A message (SMTP DATA) or an upload (the HTTP API) arrives in chunks. Small ones stay in memory;
once one grows past `threshold` it continues in a file under the spool directory (on the local
store's filesystem, so the file can become the object by a rename). Both sha256 digests the
ingest needs (of everything, and of everything after the trace header) are computed as the bytes
arrive; for a file they are computed in a thread, with the write, so the event loop never hashes
megabytes. A spool opened with a limit refuses the write that would take it past the limit.

Spool file names carry the process id: `clear_stale` removes the files of processes that are
gone (a crash mid-transfer), never those of a live one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_PREFIX = "spool-"


@dataclass(frozen=True)
class Spooled:
    """A finished spool: exactly one of `data` and `path` is set."""

    data: bytes | None
    path: Path | None
    size: int
    sha256: str  # of all the bytes
    body_sha256: str  # of the bytes after the header the spool was opened with


class OverLimit(Exception):
    """A spool was offered more bytes than its limit; discard it."""


def spool_name(directory: Path, tag: str = "") -> Path:
    """A fresh file name in `directory` that `clear_stale` can attribute to this process."""
    return directory / f"{_PREFIX}{os.getpid()}-{tag}{secrets.token_hex(8)}"


def pid_alive(pid: int) -> bool:
    """Does process `pid` still run (ours or another user's)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale(directory: Path) -> int:
    """Remove spool files of processes that no longer run (and this one's: call it at start)."""
    removed = 0
    for entry in os.scandir(directory):
        name = entry.name
        if not name.startswith(_PREFIX):
            continue
        pid_text = name[len(_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and pid_alive(int(pid_text)):
            continue
        try:
            os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


class Spooler:
    """Makes spools in one directory; file writes and their hashing run in its own threads."""

    def __init__(self, directory: Path, threshold: int, threads: int = 4) -> None:
        self.directory = directory
        self.threshold = threshold
        directory.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spool")

    def open(self, header: bytes = b"", limit: int | None = None) -> Spool:
        """A spool that starts with `header`; `limit` (None: none) bounds all its bytes."""
        return Spool(self, header, sys.maxsize if limit is None else limit)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Spool:
    """One message's (or upload's) bytes as they arrive. Not safe for concurrent `write` calls."""

    def __init__(self, spooler: Spooler, header: bytes, limit: int = sys.maxsize) -> None:
        self._spooler = spooler
        self._limit = limit
        self._buf = bytearray(header)
        self._all = hashlib.sha256(header)
        # Without a header the body is all of it: one digest serves both (an upload's).
        self._body = hashlib.sha256() if header else None
        self._fd: int | None = None
        self.path: Path | None = None
        self.size = len(header)
        # The file write running in a thread, if any. A cancelled `write` leaves it running (a
        # thread cannot be stopped), so `discard` must not close or unlink under it.
        self._pending: Future[None] | None = None

    def _write_file(self, data: bytes) -> None:
        assert self._fd is not None
        _write_all(self._fd, data)
        self._all.update(data)
        if self._body is not None:
            self._body.update(data)

    def _to_file(self, data: bytes) -> None:
        path = spool_name(self._spooler.directory)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self.path = path
        _write_all(self._fd, self._buf)
        self._buf = bytearray()
        self._write_file(data)

    async def write(self, data: bytes) -> None:
        """Append `data`; raises OSError when the spool directory cannot take it, OverLimit
        (writing nothing) when the spool would hold more than its limit."""
        if not data:
            return
        size = self.size + len(data)
        if size > self._limit:
            raise OverLimit(self._limit)
        self.size = size
        if self._fd is None and len(self._buf) + len(data) <= self._spooler.threshold:
            self._buf += data
            self._all.update(data)
            if self._body is not None:
                self._body.update(data)
            return
        fn = self._write_file if self._fd is not None else self._to_file
        self._pending = self._spooler._pool.submit(fn, data)
        await asyncio.wrap_future(self._pending)

    def finish(self) -> Spooled:
        """Stop writing; the caller now owns the file (if any) and must consume or discard it."""
        all_hex = self._all.hexdigest()
        body_hex = all_hex if self._body is None else self._body.hexdigest()
        if self._fd is None:
            data, self._buf = bytes(self._buf), bytearray()
            return Spooled(data, None, self.size, all_hex, body_hex)
        os.close(self._fd)
        self._fd = None
        return Spooled(None, self.path, self.size, all_hex, body_hex)

    def discard(self) -> None:
        """Drop everything written so far (an aborted or refused transfer). A write still
        running in its thread (its `write` was cancelled) finishes first: the file it may be
        creating is removed after it, never left behind, and its descriptor is never closed
        under it."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _: self.discard())
            return
        self._buf = bytearray()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
            size += len(piece)
    return h.hexdigest(), size
