"""Attachment text in worker processes that are killed, not trusted (SPEC §15).

pypdf has no timeout and keeps getting denial-of-service advisories; the XML readers can be
made to allocate without end. So each document is read by a `daemon.extract_worker` process
of its own at a time, its address space capped (`content.max_memory`), and killed when it
passes `content.timeout`: a pathological file costs at most the timeout, one process, and
never the daemon or the message's other attachments. Workers start when a document first
needs one (mail without documents never pays for them) and leave after `idle` seconds unused.
At most `processes` run at once; pipes are asyncio's, so no thread of ours waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from daemon.config import ContentConfig
from daemon.content import (
    ENCRYPTED,
    FAILED,
    PLAIN_KINDS,
    TOO_LARGE,
    UNSUPPORTED,
    ContentLimits,
    document_kind,
)
from daemon.extract_worker import Extracted, ReadText, frame, read_to_file, remove_files

__all__ = ["ContentPool", "ContentSettings", "ReadText"]

log = structlog.get_logger("postroom.content")

_HEADER = struct.Struct(">Q")
STARTUP_TIMEOUT = 30.0  # for a worker to start, or load a reader's libraries (a loaded machine)


@dataclass(frozen=True)
class ContentSettings:
    """Config `[content]` (daemon/config/), as the pool uses it."""

    @classmethod
    def of(cls, config: ContentConfig) -> ContentSettings:
        return cls(ContentLimits(config.max_text_chars, config.max_pages, config.max_unpacked),
                   config.timeout, config.max_memory, config.max_file_size, config.processes,
                   config.index_chars, index_delay=config.index_delay)

    limits: ContentLimits = field(default_factory=ContentLimits)
    timeout: float = 10.0
    max_memory: int = 1024 * 1024 * 1024
    max_file_size: int = 50 * 1024 * 1024
    processes: int = 2
    index_chars: int = 100_000
    idle: float = 60.0
    index_delay: float = 1.0  # how long the search index lets queued rows gather


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.idle_since = 0.0

    async def start(self, job: tuple[str, tuple[Any, ...]]) -> None:
        """Send a job with a first step (extract_worker.PREPARE) and wait until it is done."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(frame(job))
        await self.proc.stdin.drain()
        await self.answer()

    async def answer(self) -> tuple[bool, Any]:
        assert self.proc.stdout is not None
        head = await self.proc.stdout.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(head)
        answer: tuple[bool, Any] = pickle.loads(await self.proc.stdout.readexactly(size))
        return answer

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class ContentPool:
    """Reads attachments' text in confined, killable worker processes."""

    def __init__(self, settings: ContentSettings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(max(settings.processes, 1))
        self._idle: list[_Worker] = []
        self._reaper: asyncio.TimerHandle | None = None
        self.killed = 0  # workers killed past the timeout (for tests and metrics)

    async def _spawn(self) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.extract_worker", str(os.getpid()),
            str(self.settings.max_memory),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, close_fds=True)
        worker = _Worker(proc)
        try:  # its libraries loaded: from here on, only reading counts against the timeout
            await asyncio.wait_for(worker.answer(), STARTUP_TIMEOUT)
        except BaseException:
            worker.kill()
            await proc.wait()
            raise
        return worker

    async def read(self, path: str, kind: str, out_dir: Path, size: int) -> ReadText:
        """The text of the attachment file at `path` (`size` bytes), read by `kind`'s reader;
        never raises for the file's sake (a worker that hangs or dies is its `failed`)."""
        settings = self.settings
        if size > settings.max_file_size:
            return ReadText(TOO_LARGE, error="the file is over content.max_file_size")
        if kind in PLAIN_KINDS:  # decoding a bounded head: no worker needed
            return await asyncio.to_thread(read_to_file, path, kind, settings.limits,
                                           str(out_dir), settings.index_chars)
        async with self._slots:
            if self._idle:
                worker = self._idle.pop()
            else:
                try:
                    worker = await self._spawn()
                except (TimeoutError, EOFError, asyncio.IncompleteReadError, OSError) as e:
                    log.error("content.worker_start_failed", error=type(e).__name__)
                    return ReadText(FAILED, error="the content worker did not start "
                                    "(is content.max_memory too small?)")
            job = ("read_to_file", (path, kind, settings.limits, str(out_dir),
                                    settings.index_chars))
            try:
                # Its libraries loaded first (a new worker's first document of a kind), then
                # only the reading counts against content.timeout.
                await asyncio.wait_for(worker.start(job), STARTUP_TIMEOUT)
                ok, value = await asyncio.wait_for(worker.answer(), settings.timeout)
            except TimeoutError:
                worker.kill()
                await worker.proc.wait()
                self.killed += 1
                log.warning("content.timeout", kind=kind, timeout=settings.timeout)
                return ReadText(FAILED, error=f"reading took over content.timeout "
                                f"({settings.timeout:g} s): stopped")
            except (EOFError, asyncio.IncompleteReadError, OSError) as e:
                worker.kill()
                code = await worker.proc.wait()
                log.warning("content.worker_died", kind=kind, code=code)
                return ReadText(FAILED, error=f"the reader died ({type(e).__name__}, exit "
                                f"{code}): the document is damaged or hostile")
            except BaseException:
                worker.kill()  # cancelled mid-job: the worker's answer would be out of step
                raise
            self._park(worker)
        if not ok:
            return ReadText(FAILED, error=f"the reader failed: {type(value).__name__}")
        assert isinstance(value, ReadText)
        return value

    async def texts(self, extracted: Extracted, out_dir: Path,
                    discard_on_error: bool = False) -> None:
        """Every stored attachment's text into `extracted.texts` (index → what reading it
        came to), the files of those read into `extracted.files` as "t<index>". An attachment
        that arrived encrypted is `encrypted`; one no reader knows, `unsupported`. With
        `discard_on_error`, `extracted`'s files are removed if this raises (cancelled)."""
        try:
            await self._texts(extracted, out_dir)
        except BaseException:
            if discard_on_error:
                remove_files(extracted.files)
            raise

    async def _texts(self, extracted: Extracted, out_dir: Path) -> None:
        found: dict[int, ReadText] = {}
        jobs: dict[int, asyncio.Task[ReadText]] = {}
        for part in extracted.found.attachments:
            path = extracted.files.get(str(part.index))
            if path is None:  # rejected: nothing was stored to read
                continue
            kind = document_kind(part.content_type, part.file_name, part.detected_content_type)
            if part.encrypted:
                found[part.index] = ReadText(ENCRYPTED, error="the attachment is encrypted")
            elif kind is None:
                found[part.index] = ReadText(UNSUPPORTED, error=f"no reader for "
                                             f"{part.content_type.split(';')[0][:100]}")
            else:
                jobs[part.index] = asyncio.ensure_future(self.read(path, kind, out_dir, part.size))
        try:
            for index, job in jobs.items():
                found[index] = await job
        except BaseException:
            for job in jobs.values():
                job.cancel()
            discard({i: j.result() for i, j in jobs.items()
                     if j.done() and not j.cancelled() and j.exception() is None})
            raise
        for index, text in found.items():
            if text.file is not None:
                extracted.files[f"t{index}"] = text.file
        extracted.texts.update(found)

    def _park(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        worker.idle_since = loop.time()
        self._idle.append(worker)
        if self._reaper is None:
            self._reaper = loop.call_later(self.settings.idle, self._reap)

    def _reap(self) -> None:
        """Close the workers idle for `idle` seconds; look again while some are left."""
        self._reaper = None
        loop = asyncio.get_running_loop()
        keep = []
        for worker in self._idle:
            if loop.time() - worker.idle_since >= self.settings.idle:
                self._close(worker)
            else:
                keep.append(worker)
        self._idle = keep
        if keep:
            self._reaper = loop.call_later(self.settings.idle, self._reap)

    @staticmethod
    def _close(worker: _Worker) -> None:
        if worker.proc.stdin is not None:
            worker.proc.stdin.close()  # it reads EOF and exits; the loop reaps it

    @property
    def workers(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for worker in self._idle:
            self._close(worker)
        self._idle = []


def discard(texts: dict[int, ReadText]) -> None:
    remove_files({str(i): t.file for i, t in texts.items() if t.file is not None})
