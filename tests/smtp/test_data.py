"""The DATA reader without a socket: its time budget on an injected clock, and the reader fed
bytes through an asyncio StreamReader into a recording spool."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from daemon.smtp.data import TimeBudget, read_message
from storage.spool import Spool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_moving_data_keeps_the_whole_budget() -> None:
    clock = Clock()
    budget = TimeBudget(3.0, clock, rate=500)
    for _ in range(100):  # 50 s of DATA, 10 kB every half second
        clock.now += 0.5
        assert budget.spend(10_000) == 3.0


def test_a_gap_as_long_as_the_timeout_spends_it() -> None:
    clock = Clock()
    budget = TimeBudget(3.0, clock, rate=500)
    clock.now += 2.0
    assert budget.spend(0) == pytest.approx(1.0)
    clock.now += 1.0
    assert budget.spend(0) == 0.001  # the timer fires at once


def test_a_byte_a_second_runs_out_in_about_the_timeout() -> None:
    clock = Clock()
    budget = TimeBudget(3.0, clock, rate=500)
    left = []
    for _ in range(4):
        clock.now += 1.0
        left.append(budget.spend(1))
    assert left[2] == pytest.approx(3 / 500)  # after 3 s: only the 6 ms three bytes earned
    assert left[3] == 0.001


def test_a_burst_cannot_bank_time_for_a_trickle() -> None:
    clock = Clock()
    budget = TimeBudget(3.0, clock, rate=500)
    clock.now += 0.1
    assert budget.spend(50_000_000) == 3.0  # capped at the timeout
    clock.now += 3.0
    assert budget.spend(1) == pytest.approx(1 / 500)  # only what the one byte earned


class RecordingSpool:
    def __init__(self, fail: bool = False) -> None:
        self.data = b""
        self.discarded = False
        self.fail = fail

    async def write(self, data: bytes) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.data += data

    def discard(self) -> None:
        self.discarded = True


async def _read(stream: bytes, limit: int = 1_000_000, spool: RecordingSpool | None = None,
                eof: bool = False) -> tuple[str, int, RecordingSpool, asyncio.StreamReader,
                                            list[float]]:
    reader = asyncio.StreamReader(limit=1001)  # aiosmtpd's line_length_limit
    reader.feed_data(stream)
    if eof:
        reader.feed_eof()
    spool = spool or RecordingSpool()
    armed: list[float] = []
    outcome, size = await read_message(reader, cast(Spool, spool), limit,
                                       TimeBudget(3.0, Clock()), armed.append)
    return outcome, size, spool, reader, armed


async def test_the_message_goes_to_the_spool_and_pipelined_commands_back_to_the_reader() -> None:
    outcome, size, spool, reader, armed = await _read(
        b"Subject: x\r\n\r\n..dot\r\n" + b"y" * 5000 + b"\r\n.\r\nQUIT\r\n")
    assert (outcome, size) == ("ok", len(spool.data))
    assert spool.data == b"Subject: x\r\n\r\n.dot\r\n" + b"y" * 5000 + b"\r\n"
    assert not spool.discarded and armed == [3.0]  # one chunk, the budget untouched
    assert await reader.readuntil(b"\r\n") == b"QUIT\r\n"
    # The reader's line bound is back: a command line longer than it is refused again.
    reader.feed_data(b"N" * 2000 + b"\r\n")
    with pytest.raises(asyncio.LimitOverrunError):
        await reader.readuntil(b"\r\n")


async def test_past_the_limit_the_rest_is_read_and_dropped() -> None:
    outcome, size, spool, reader, _ = await _read(b"x" * 50 + b"\r\n.\r\nNOOP\r\n", limit=10)
    assert (outcome, size, spool.discarded) == ("too_big", 52, True)
    assert await reader.readuntil(b"\r\n") == b"NOOP\r\n"  # still in step with the client


async def test_a_spool_that_cannot_write_fails_the_message_and_keeps_in_step() -> None:
    outcome, _, spool, reader, _ = await _read(b"body\r\n.\r\nNOOP\r\n",
                                               spool=RecordingSpool(fail=True))
    assert (outcome, spool.discarded) == ("failed", True)
    assert await reader.readuntil(b"\r\n") == b"NOOP\r\n"


async def test_the_end_of_the_stream_before_the_end_marker_is_a_reset() -> None:
    with pytest.raises(ConnectionResetError):
        await _read(b"Subject: cut\r\n\r\nno end", eof=True)
