"""Extraction in worker processes: results match, and a dead worker is survived."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.pipeline.pool import IN_FLIGHT, ExtractionPool, ProcessWorkers, remove_files
from extractors import Limits, extract_message
from storage.errors import TransientError

MESSAGE = (b"From: a@b.test\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n"
           b"\r\nbody\r\n--b\r\nContent-Type: application/pdf; name=x.pdf\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--b--\r\n")


async def test_worker_results_equal_in_process_results(tmp_path: Path) -> None:
    pool = ExtractionPool(1)
    try:
        await pool.start()
        got = await pool.extract(MESSAGE, Limits(), tmp_path)
    finally:
        pool.close()
    expected = extract_message(MESSAGE, Limits())
    # The bytes travel as files, the records without them.
    assert got.found.attachments[0].file_name == "x.pdf"
    assert got.found.attachments[0].data == b""
    assert got.found == replace(expected, text_body=replace(expected.text_body, text=""),
                                attachments=tuple(replace(p, data=b"")
                                                  for p in expected.attachments))
    assert sorted(got.files) == ["0", "text"]
    assert Path(got.files["0"]).read_bytes() == expected.attachments[0].data
    assert Path(got.files["text"]).read_bytes() == b"body"
    assert all(Path(f).parent == tmp_path for f in got.files.values())


async def test_a_file_source_is_read_by_the_worker(tmp_path: Path) -> None:
    raw = tmp_path / "raw.eml"
    raw.write_bytes(MESSAGE)
    pool = ExtractionPool(1)
    try:
        got = await pool.extract(raw, Limits(), tmp_path)
        with pytest.raises(FileNotFoundError):
            await pool.extract(tmp_path / "gone.eml", Limits(), tmp_path)
    finally:
        pool.close()
    assert got.found.headers.subject == "hi"
    remove_files(got.files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.eml"]


async def test_a_cancelled_wait_leaves_no_files(tmp_path: Path) -> None:
    pool = ExtractionPool(0)
    try:
        task = asyncio.create_task(pool.extract(MESSAGE * 2000, Limits(), tmp_path))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The work runs on to its end, and its files go once it has: wait for the thread
        # (an empty directory on the way proves nothing: it may not have written yet).
        await asyncio.to_thread(pool._executor.shutdown, True)
    finally:
        pool.close()
    assert list(tmp_path.iterdir()) == []


async def test_a_killed_worker_fails_one_attempt_and_the_pool_recovers(tmp_path: Path) -> None:
    pool = ExtractionPool(1)
    try:
        await pool.start()
        executor = pool._executor
        assert isinstance(executor, ProcessWorkers)
        for proc in executor.procs:  # as the OOM killer would
            os.kill(proc.pid, signal.SIGKILL)
        with pytest.raises(TransientError):
            for _ in range(50):  # the pool notices the death on the next submission
                await pool.extract(MESSAGE, Limits(), tmp_path)
        again = await pool.extract(MESSAGE, Limits(), tmp_path)
        assert again.found.headers.subject == "hi"
    finally:
        pool.close()



def _numbered(i: int) -> bytes:
    return MESSAGE.replace(b"Subject: hi", f"Subject: job {i}".encode())


async def _in_flight(executor: ProcessWorkers, count: int) -> None:
    for _ in range(3000):
        if len(executor.sent[0]) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never {count} jobs in the worker's pipe")


@contextlib.asynccontextmanager
async def _held_worker(tmp_path: Path) -> AsyncIterator[tuple[ExtractionPool, ProcessWorkers,
                                                               Path]]:
    """A started pool of one worker, and a FIFO: a job reading it holds the worker in its read
    until the test writes the message into it."""
    fifo = tmp_path / "held.eml"
    os.mkfifo(fifo)
    pool = ExtractionPool(1)
    try:
        await pool.start()
        executor = pool._executor
        assert isinstance(executor, ProcessWorkers)
        yield pool, executor, fifo
    finally:
        pool.close()


async def test_jobs_are_queued_in_the_workers_pipe_and_answered_in_order(tmp_path: Path) -> None:
    """The next jobs are already in the pipe while the worker is on one (it never waits for
    the daemon between jobs), and every job gets its own reply.

    The first job's source is the FIFO."""
    async with _held_worker(tmp_path) as (pool, executor, fifo):
        held = asyncio.create_task(pool.extract(fifo, Limits(), tmp_path))
        jobs = [asyncio.create_task(pool.extract(_numbered(i), Limits(), tmp_path))
                for i in range(40)]
        await _in_flight(executor, IN_FLIGHT)
        await asyncio.sleep(0.2)
        assert len(executor.sent[0]) == IN_FLIGHT  # and never more
        assert not any(j.done() for j in jobs)
        await asyncio.to_thread(fifo.write_bytes, _numbered(-1))
        results = await asyncio.wait_for(asyncio.gather(*jobs), 60)
        first = await held
    assert first.found.headers.subject == "job -1"
    assert [r.found.headers.subject for r in results] == [f"job {i}" for i in range(40)]


async def test_a_worker_killed_with_jobs_in_its_pipe_fails_each_of_them(tmp_path: Path) -> None:
    async with _held_worker(tmp_path) as (pool, executor, fifo):
        jobs = [asyncio.create_task(pool.extract(fifo, Limits(), tmp_path))]
        jobs += [asyncio.create_task(pool.extract(_numbered(i), Limits(), tmp_path))
                 for i in range(IN_FLIGHT + 3)]
        await _in_flight(executor, IN_FLIGHT)
        os.kill(executor.procs[0].pid, signal.SIGKILL)
        # A deadline, not a timing: a hang fails it (a job that joined the dead worker's list
        # after the collector had failed it waited for ever, until the feeder checked too).
        outcomes = await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), 120)
        again = await pool.extract(MESSAGE, Limits(), tmp_path)
    assert all(isinstance(o, TransientError) for o in outcomes), outcomes
    assert again.found.headers.subject == "hi"
