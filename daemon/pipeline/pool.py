"""Extraction in worker processes: the parser never holds the event loop's GIL.

A thread running the MIME walker makes every other thread hop (database results, file writes)
wait for the GIL, which costs milliseconds per hop under load. Worker processes avoid that and
use the second core. They are plain child processes (`daemon.extract_worker`) fed through
pipes: no multiprocessing machinery, whose resource tracker alone would be another process of
12 MiB. A worker that dies (a hostile message, the OOM killer) breaks only its pool: the pool is
rebuilt and the message's attempt fails as transient, to be retried and, after
`pipeline.max_attempts`, recorded as failed. `processes = 0` runs extraction in a thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import structlog

from daemon.extract_worker import (
    JOBS,
    Extracted,
    extract_to_files,
    frame,
    read_frame,
    remove_files,
    warm,
)
from extractors import Limits
from storage.errors import TransientError

__all__ = ["Extracted", "ExtractionPool", "extract_to_files", "remove_files"]

log = structlog.get_logger("postroom.extraction")

_Job = tuple[Future[Any], tuple[Any, ...]]
IN_FLIGHT = 4  # jobs in one worker's pipe at a time


class ProcessWorkers(Executor):
    """`processes` worker processes, each fed by a thread of ours; runs `extract_to_files` only.

    Each worker has up to `IN_FLIGHT` jobs in its pipe: a writer thread sends the next job
    while the worker is still on the last one, and a reader thread takes the results, which
    come back in order. Strict request and reply left the worker idle whenever the daemon's
    GIL was busy (under load most of the time): the thread that would read one reply and send
    the next job waited for it first.
    Like ProcessPoolExecutor, a worker's death fails its jobs and every later submission with
    BrokenProcessPool; the owner then builds a new one.
    """

    def __init__(self, processes: int) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._broken = False
        self._lock = threading.Lock()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sent: list[collections.deque[Future[Any]]] = []  # each worker's jobs, in order
        for i in range(processes):
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.extract_worker", str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
            self.procs.append(proc)
            sent: collections.deque[Future[Any]] = collections.deque()
            self.sent.append(sent)
            slots = threading.Semaphore(IN_FLIGHT)
            threading.Thread(target=self._feed, args=(proc, sent, slots),
                             name=f"extract-feed-{i}", daemon=True).start()
            threading.Thread(target=self._collect, args=(proc, sent, slots),
                             name=f"extract-read-{i}", daemon=True).start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if JOBS.get(getattr(fn, "__name__", "")) is not fn or kwargs:
            raise ValueError("extraction workers run the jobs of daemon.extract_worker only")
        with self._lock:
            if self._broken:
                raise BrokenProcessPool("an extraction worker died")
            future: Future[Any] = Future()
            self._jobs.put((future, (fn.__name__, args)))
            return future

    def _feed(self, proc: subprocess.Popen[bytes], sent: collections.deque[Future[Any]],
              slots: threading.Semaphore) -> None:
        """Send jobs to `proc` while it has fewer than IN_FLIGHT; `sent` is their order."""
        assert proc.stdin is not None
        while True:
            slots.acquire()
            job = self._jobs.get()
            if job is None:  # shut down: jobs sent to a worker that will not answer fail
                with self._lock:
                    broken = self._broken
                if broken:
                    self._break(sent, slots)
                return
            future, args = job
            if not future.set_running_or_notify_cancel():
                slots.release()
                continue
            try:
                data = frame(args)
            except Exception as e:  # a job that does not pickle fails alone
                slots.release()
                future.set_exception(e)
                continue
            sent.append(future)
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except (OSError, ValueError):  # the worker is gone, or its pipe closed by shutdown
                with contextlib.suppress(OSError):
                    proc.stdin.close()
                self._break(sent, slots)
                return
            with self._lock:
                broken = self._broken
            if broken:
                # The collector may have failed `sent` before this job joined it, and a write
                # can still succeed while the dead worker's pipe is being torn down: fail what
                # is left here, or it would wait for a reply that never comes.
                self._break(sent, slots)
                return

    def _collect(self, proc: subprocess.Popen[bytes], sent: collections.deque[Future[Any]],
                 slots: threading.Semaphore) -> None:
        """Resolve each sent job with the worker's reply, in the order they were sent."""
        assert proc.stdout is not None
        try:
            while True:
                try:
                    ok, value = read_frame(proc.stdout)
                except (EOFError, OSError):
                    self._break(sent, slots)
                    return
                except Exception as e:  # a reply that did not unpickle: the stream is intact
                    ok, value = False, e
                future = sent.popleft()
                slots.release()
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        finally:
            proc.stdout.close()

    def _break(self, sent: collections.deque[Future[Any]], slots: threading.Semaphore) -> None:
        """A worker died: fail what it had and everything queued; later submissions fail."""
        with self._lock:
            self._broken = True
        while sent:  # jobs sent to the dead worker: a feeder appending late fails its own
            with contextlib.suppress(IndexError, InvalidStateError):
                sent.popleft().set_exception(BrokenProcessPool("an extraction worker died"))
        slots.release(IN_FLIGHT)  # a feeder waiting for room wakes up to its shutdown
        while True:  # everything still queued fails the same way
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job[0].set_running_or_notify_cancel():
                job[0].set_exception(BrokenProcessPool("an extraction worker died"))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._broken = True
        for _ in self.procs:
            self._jobs.put(None)
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # the worker reads EOF and exits
            if wait:
                proc.wait()
            else:
                threading.Thread(target=_reap, args=(proc,), daemon=True).start()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        return ProcessWorkers(self._processes)

    async def start(self) -> None:
        """Wait until the workers have started, so the first message does not pay for it."""
        await asyncio.gather(*(asyncio.wrap_future(self._executor.submit(warm))
                               for _ in range(max(self._processes, 1))))

    async def extract(self, source: bytes | Path, limits: Limits,
                      out_dir: Path, index_chars: int = 0) -> Extracted:
        """Extract one message into spool files under `out_dir`.

        TransientError when the worker died under it or its spool files could not be
        written; FileNotFoundError when `source` is a
        path that does not exist. Cancelling the wait leaves the worker to finish, then removes
        its files.
        """
        executor = self._executor
        arg = source if isinstance(source, bytes) else str(source)
        try:
            future: Future[Extracted] = executor.submit(extract_to_files, arg, limits,
                                                        str(out_dir), index_chars)
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
        except FileNotFoundError:
            raise
        except OSError as e:
            # The spool could not take the results (disk full, read-only): the message is not
            # at fault, and the job is retried once the disk is back.
            raise TransientError(f"extraction spool: {e.strerror or e}") from e

    def _rebuild(self, executor: Executor) -> None:
        if executor is self._executor:  # the first to notice rebuilds the pool
            log.error("extraction.worker_died")
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._make()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
