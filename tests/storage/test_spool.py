"""Spooling incoming bytes: memory below the threshold, a file above, digests as they arrive;
the local store taking spool files over by rename."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from storage.errors import InvalidKey
from storage.local import LocalStore
from storage.presign import UrlSigner
from storage.spool import Spooler, clear_stale, spool_name
from tests.harness import wait_until

HEADER = b"Received: from x\r\n"


def _digests(data: bytes) -> tuple[str, str]:
    return hashlib.sha256(HEADER + data).hexdigest(), hashlib.sha256(data).hexdigest()


async def test_small_messages_stay_in_memory(tmp_path: Path) -> None:
    spooler = Spooler(tmp_path, threshold=1024)
    try:
        spool = spooler.open(HEADER)
        await spool.write(b"a" * 500)
        await spool.write(b"b" * 400)
        done = spool.finish()
    finally:
        spooler.close()
    body = b"a" * 500 + b"b" * 400
    assert done.data == HEADER + body and done.path is None
    assert done.size == len(HEADER) + len(body)
    assert (done.sha256, done.body_sha256) == _digests(body)
    assert list(tmp_path.iterdir()) == []


async def test_large_messages_move_to_a_file_with_the_same_digests(tmp_path: Path) -> None:
    spooler = Spooler(tmp_path, threshold=1024)
    try:
        spool = spooler.open(HEADER)
        chunks = [os.urandom(700) for _ in range(30)]
        for chunk in chunks:
            await spool.write(chunk)
        done = spool.finish()
    finally:
        spooler.close()
    body = b"".join(chunks)
    assert done.data is None and done.path is not None
    assert done.path.read_bytes() == HEADER + body
    assert (done.sha256, done.body_sha256) == _digests(body)
    assert done.size == len(HEADER) + len(body)


async def test_discard_removes_the_file(tmp_path: Path) -> None:
    spooler = Spooler(tmp_path, threshold=10)
    try:
        spool = spooler.open(HEADER)
        await spool.write(b"x" * 100)
        assert len(list(tmp_path.iterdir())) == 1
        spool.discard()
    finally:
        spooler.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("first_spill", [True, False])
async def test_discarding_after_a_cancelled_write_waits_for_its_thread(
        tmp_path: Path, first_spill: bool) -> None:
    """A connection lost mid-DATA cancels the write awaiting its thread; the thread goes on
    (creating the file, on the first spill). The discard must not close the descriptor under
    it nor miss the file it makes: once the thread is done the spool directory is empty."""
    spooler = Spooler(tmp_path, threshold=10)
    entered, release = threading.Event(), threading.Event()
    try:
        spool = spooler.open(HEADER)
        if not first_spill:
            await spool.write(b"x" * 100)  # the file exists; the next write appends
        real = spool._to_file if first_spill else spool._write_file

        def slow(data: bytes) -> None:
            entered.set()
            release.wait(10)
            real(data)

        if first_spill:
            spool._to_file = slow  # type: ignore[method-assign]
        else:
            spool._write_file = slow  # type: ignore[method-assign]
        task = asyncio.create_task(spool.write(b"y" * 100))
        await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        spool.discard()  # the thread is still writing
        release.set()
        await asyncio.to_thread(wait_until, lambda: list(tmp_path.iterdir()) == [], 10,
                                "the spool file to go")
    finally:
        release.set()
        spooler.close()


def test_stale_files_of_dead_processes_go_and_live_ones_stay(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / f"spool-{dead}-abc").write_bytes(b"left by a crash")
    (tmp_path / f"spool-{os.getppid()}-abc").write_bytes(b"a live process's")
    (tmp_path / "not-a-spool-file").write_bytes(b"someone else's")
    mine = spool_name(tmp_path)
    mine.write_bytes(b"this process, at start: stale by definition")
    assert clear_stale(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"spool-{os.getppid()}-abc", "not-a-spool-file"])


async def test_the_local_store_takes_spool_files_by_rename(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects", UrlSigner(b"k" * 32), "http://127.0.0.1:1")
    try:
        first, second = spool_name(store.spool_dir), spool_name(store.spool_dir)
        first.write_bytes(b"one")
        second.write_bytes(b"two")
        inode = first.stat().st_ino
        await store.put_files([("raw/m.eml", first), ("inbound/m/0", second)])
        assert await store.get("raw/m.eml") == b"one"
        assert await store.get("inbound/m/0") == b"two"
        assert store.path_for("raw/m.eml").stat().st_ino == inode  # moved, not copied
        assert list(store.spool_dir.iterdir()) == []
        assert store.local_path("raw/m.eml") == store.path_for("raw/m.eml")
        # The spool directory is no key's: nothing can be read or written there by key.
        for key in (".spool/x", "raw/../.spool/x"):
            with pytest.raises(InvalidKey):
                store.path_for(key)
        third = spool_name(store.spool_dir)
        third.write_bytes(b"three")
        with pytest.raises(InvalidKey):
            await store.put_files([("../escape", third)])
        assert third.exists()  # refused before anything moved
    finally:
        await store.close()
