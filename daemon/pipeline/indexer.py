"""The search index filled off the results' path (SPEC §15): `SearchIndexer`.

A message's results queue its index row (`storage.search.queue_message`, in their own
transaction); this task moves the queued rows into the full-text index many at a time, through
the group-commit writer, `delay` after the first of them was queued, so a burst of mail pays
the index's cost per batch, not per message. A search on this node first waits until every
row queued here before it is indexed (`caught_up`): what is ready is found. Rows another node
queued are indexed by that node within its delay, or by the periodic sweep of any node (after
a crash between the two steps).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy import Connection

from storage.errors import TransientError
from storage.group_commit import GroupCommit
from storage.search import index_pending

log = structlog.get_logger("postroom.pipeline")


class SearchIndexer:
    """Moves `message_search_pending` into the index: `queued` after a commit that queued
    rows, `caught_up` before a search, `run` as the daemon's task."""

    def __init__(self, writer: GroupCommit, delay: float = 1.0, batch: int = 500,
                 sweep: float = 30.0) -> None:
        self._writer = writer
        self._delay = delay
        self._batch = batch
        self._sweep = sweep
        # Commits that queued rows so far (the first: whatever an earlier run left), and how
        # many of those are indexed for certain.
        self._queued, self._indexed = 1, 0
        self._wake = asyncio.Event()  # something was queued
        self._hurry = asyncio.Event()  # a search waits: no delay
        self._progress = asyncio.Event()  # a round ended (replaced at each)
        self.batches = 0  # transactions that indexed rows (the tests read it)

    def queued(self) -> None:
        """A transaction that queued index rows has committed on this node."""
        self._queued += 1
        self._wake.set()

    async def caught_up(self, within: float = 5.0) -> None:
        """Return once every row queued on this node before the call is indexed, or after
        `within` seconds (the search then runs on the index as it is)."""
        target = self._queued
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._indexed < target:
            left = deadline - loop.time()
            if left <= 0:
                log.warning("search.index_behind", queued=target - self._indexed)
                return
            self._hurry.set()
            progress = self._progress
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), left)

    def _move(self, conn: Connection) -> int:
        return index_pending(conn, self._batch)

    async def _round(self) -> None:
        """Index everything queued so far, a batch per transaction."""
        target = self._queued
        while True:
            moved = await self._writer.write(self._move)
            if moved:
                self.batches += 1
            if moved < self._batch:
                break
        self._indexed = max(self._indexed, target)

    async def run(self) -> None:
        """Index what an earlier run left (a crash), then each burst `delay` after it starts,
        and sweep every `sweep` seconds, until cancelled."""
        while True:
            # Cleared as the round starts: what it takes covers every call so far, and a
            # call during the round asks for the next one.
            self._wake.clear()
            self._hurry.clear()
            try:
                await self._round()
            except TransientError as e:  # the rows stay queued: the next round takes them
                log.warning("search.index_failed", error=str(e))
                self._wake.set()
                await asyncio.sleep(self._delay)
            finally:
                self._progress.set()
                self._progress = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sweep)
            if not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self._delay)
