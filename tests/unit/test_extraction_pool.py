"""Extraction in worker processes: results match, and a dead worker is survived."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ProcessPoolExecutor

import pytest

from daemon.extraction_pool import ExtractionPool
from extractors import Limits, extract_message
from storage.errors import TransientError

MESSAGE = (b"From: a@b.test\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n"
           b"\r\nbody\r\n--b\r\nContent-Type: application/pdf; name=x.pdf\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--b--\r\n")


async def test_worker_results_equal_in_process_results() -> None:
    pool = ExtractionPool(1)
    try:
        await pool.start()
        got = await pool.extract(MESSAGE, Limits())
    finally:
        pool.close()
    assert got == extract_message(MESSAGE, Limits())
    assert got.attachments[0].file_name == "x.pdf"


async def test_a_killed_worker_fails_one_attempt_and_the_pool_recovers() -> None:
    pool = ExtractionPool(1)
    try:
        await pool.start()
        executor = pool._executor
        assert isinstance(executor, ProcessPoolExecutor)
        for pid in list(executor._processes):  # as the OOM killer would
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(TransientError):
            for _ in range(50):  # the pool notices the death on the next submission
                await pool.extract(MESSAGE, Limits())
        again = await pool.extract(MESSAGE, Limits())
        assert again.headers.subject == "hi"
    finally:
        pool.close()
