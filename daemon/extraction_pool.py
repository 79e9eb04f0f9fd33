"""Extraction in worker processes: the parser never holds the event loop's GIL.

A thread running the MIME walker makes every other thread hop (database results, file writes)
wait for the GIL, which costs milliseconds per hop under load. Worker processes avoid that and
use the second core. A worker that dies (a hostile message, the OOM killer) breaks only its
pool: the pool is rebuilt and the message's attempt fails as transient, to be retried and, after
`pipeline.max_attempts`, recorded as failed. `processes = 0` runs extraction in a thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import structlog

from extractors import Extraction, Limits, extract_message
from storage.errors import TransientError

log = structlog.get_logger("postroom.extraction")


def _warm() -> bool:
    return True


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

    async def extract(self, raw: bytes, limits: Limits) -> Extraction:
        """Extract one message; TransientError when the worker died under it."""
        loop = asyncio.get_running_loop()
        executor = self._executor
        try:
            return await loop.run_in_executor(executor, extract_message, raw, limits)
        except BrokenProcessPool as e:
            if executor is self._executor:  # the first to notice rebuilds the pool
                log.error("extraction.worker_died")
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._make()
            raise TransientError("the extraction process died") from e

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
