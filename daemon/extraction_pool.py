"""Extraction in worker processes: the parser never holds the event loop's GIL.

A thread running the MIME walker makes every other thread hop (database results, file writes)
wait for the GIL, which costs milliseconds per hop under load. Worker processes avoid that and
use the second core. A worker that dies (a hostile message, the OOM killer) breaks only its
pool: the pool is rebuilt and the message's attempt fails as transient, to be retried and, after
`pipeline.max_attempts`, recorded as failed. `processes = 0` runs extraction in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from extractors import Extraction, Limits, extract_message
from storage.errors import TransientError
from storage.spool import spool_name

log = structlog.get_logger("postroom.extraction")


def _warm() -> bool:
    return True


@dataclass(frozen=True)
class Extracted:
    """What a worker found, with every body and attachment's bytes in a spool file of its own.

    `found` carries no bytes (parts' `data` and bodies' `text` are empty), so little crosses the
    process boundary; `files` maps "text", "html" and each stored part's index (as a string) to
    its file. The caller owns the files: it moves them into the store or removes them.
    """

    found: Extraction
    files: dict[str, str]


def _write_file(directory: Path, data: bytes) -> str:
    path = spool_name(directory, "x")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return str(path)


def extract_to_files(source: bytes | str, limits: Limits, out_dir: str) -> Extracted:
    """Extract the message in `source` (its bytes, or the path of a file holding them)."""
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    found = extract_message(raw, limits)
    del raw
    directory = Path(out_dir)
    files: dict[str, str] = {}
    try:
        bodies = []
        for body in (found.text_body, found.html_body):
            if body is not None:
                files[body.kind] = _write_file(directory,
                                               body.text.encode("utf-8", "surrogatepass"))
                body = replace(body, text="")
            bodies.append(body)
        parts = []
        for part in found.attachments:
            if part.outcome != "rejected":
                files[str(part.index)] = _write_file(directory, part.data)
            parts.append(replace(part, data=b""))
    except BaseException:
        remove_files(files)
        raise
    return Extracted(replace(found, text_body=bodies[0], html_body=bodies[1],
                             attachments=tuple(parts)), files)


def remove_files(files: dict[str, str]) -> None:
    """Remove whatever of `files` is still there (the store may have taken some)."""
    for path in files.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: never outlive the daemon (ProcessPoolExecutor workers would).

    The kernel's parent-death signal covers a SIGKILLed daemon on Linux; a watcher thread covers
    everything else.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _discard_result(future: Future[Extracted]) -> None:
    if not future.cancelled() and future.exception() is None:
        remove_files(future.result().files)


class ExtractionPool:
    """Runs `extract_message` away from the event loop."""

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._executor = self._make()

    def _make(self) -> Executor:
        if self._processes == 0:
            return ThreadPoolExecutor(max_workers=2, thread_name_prefix="extract")
        # spawn, not fork: the parent has threads (aiosqlite, the store) and a running loop.
        return ProcessPoolExecutor(max_workers=self._processes,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_die_with_parent, initargs=(os.getpid(),))

    async def start(self) -> None:
        """Start the workers now, so the first message does not pay for it."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, _warm)
                               for _ in range(max(self._processes, 1))))

    async def extract(self, source: bytes | Path, limits: Limits,
                      out_dir: Path) -> Extracted:
        """Extract one message into spool files under `out_dir`.

        TransientError when the worker died under it; FileNotFoundError when `source` is a
        path that does not exist. Cancelling the wait leaves the worker to finish, then removes
        its files.
        """
        executor = self._executor
        arg = source if isinstance(source, bytes) else str(source)
        try:
            future: Future[Extracted] = executor.submit(extract_to_files, arg, limits,
                                                        str(out_dir))
        except BrokenProcessPool as e:
            self._rebuild(executor)
            raise TransientError("the extraction process died") from e
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_discard_result)
            raise
        except BrokenProcessPool as e:
            self._rebuild(executor)
            raise TransientError("the extraction process died") from e

    def _rebuild(self, executor: Executor) -> None:
        if executor is self._executor:  # the first to notice rebuilds the pool
            log.error("extraction.worker_died")
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._make()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
