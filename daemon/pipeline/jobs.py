"""After 250: extraction jobs, claimed by lease and re-run from the raw object until terminal.

Each accepted message id goes on a bounded in-process queue, usually already leased to this
node by ingest; a sweeper also claims unfinished messages nobody holds (after a crash, another
node's death, or when the queue was full). A worker extracts in a worker process, stores bodies
and attachment bytes, then records every attachment terminal. Every write of results is fenced
by the lease: a node that lost its lease (it stalled past expiry and another node took over)
writes nothing, so a message is recorded once whoever finishes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, delete
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.clock import SYSTEM, Clock
from daemon.config import ContentConfig
from daemon.events import Wakeups, message_agents
from daemon.extract_worker import Extracted
from daemon.openpgp import GpgUnavailable, OpenPgp
from daemon.ops import Metrics
from daemon.pipeline.backpressure import Backpressure
from daemon.pipeline.content_pool import ContentPool, ContentSettings
from daemon.pipeline.indexer import SearchIndexer
from daemon.pipeline.leases import (
    claim_batch,
    claim_message,
    defer_after_transient,
    record_failure,
    release_lease,
    release_node_leases,
    renew_lease,
)
from daemon.pipeline.pool import ExtractionPool, remove_files
from daemon.pipeline.results import (
    EARLIER_ATTACHMENTS,
    Outcome,
    Results,
    fenced_update,
    object_key,
)
from daemon.pipeline.verification import (
    Sender,
    Verifications,
    Verifying,
    announcing,
    check_signature,
    verdict_of,
)
from daemon.sender_auth import SenderAuth
from extractors import Extraction, Limits
from storage.errors import DatabaseError, ObjectNotFound, PermanentError, TransientError
from storage.group_commit import GroupCommit
from storage.models import FAILED, Attachment, Message
from storage.objects import ObjectStore, raw_key
from storage.spool import spool_name

log = structlog.get_logger("postroom.pipeline")

# Attachments totalling more than this are recorded `pending` before their bytes are stored.
PENDING_FIRST_ABOVE = 8 * 1024 * 1024

MESSAGES = Message.__table__  # type: ignore[attr-defined]
ATTACHMENTS = Attachment.__table__  # type: ignore[attr-defined]


class LeaseLost(Exception):
    """Our lease on the message is gone: another node owns it now and records its results."""


@dataclass(frozen=True)
class Lease:
    """A lease to write with a new message's row."""

    owner: str
    expires_at: datetime


@dataclass(frozen=True)
class PipelineSettings:
    workers: int
    queue_size: int
    lease: float
    sweep_interval: float
    max_attempts: int
    limits: Limits
    retry_for: float = 5 * 86400.0
    max_lag: float = 0.5
    content: ContentSettings | ContentConfig = field(default_factory=ContentSettings)


class Pipeline:
    """The queue, its workers and the sweeper of one node."""

    def __init__(self, settings: PipelineSettings, sessions: async_sessionmaker[AsyncSession],
                 writer: GroupCommit, store: ObjectStore, extraction: ExtractionPool,
                 node_id: str, notifier: Wakeups, events: Wakeups,
                 pgp: OpenPgp | None = None, metrics: Metrics | None = None,
                 incoming: Callable[[], int] = lambda: 0, clock: Clock = SYSTEM,
                 sender_auth: SenderAuth | None = None) -> None:
        if isinstance(settings.content, ContentConfig):  # as configured: the pool's view
            settings = dataclasses.replace(settings, content=ContentSettings.of(settings.content))
        self._clock = clock  # every reading of time here goes through it
        self.verifications = Verifications(sender_auth, writer)
        self._background: set[asyncio.Task[None]] = set()  # jobs waiting for their verdict
        self._senders: dict[str, Sender] = {}  # of new messages queued, from ingest
        self.backpressure = Backpressure(settings.max_lag, incoming, clock)
        self._pgp = pgp
        self._metrics = metrics
        self._events = events
        self.settings = settings
        self._sessions = sessions
        self._writer = writer
        self._store = store
        self._extraction = extraction
        assert isinstance(settings.content, ContentSettings)
        self.content = ContentPool(settings.content)
        self.search = SearchIndexer(writer, settings.content.index_delay)
        self._node = node_id
        self._notifier = notifier
        # (message id, (when this node claimed it, its attempt), or None: a worker claims it)
        self._queue: asyncio.Queue[tuple[str, tuple[float, int] | None]] = asyncio.Queue()
        self._queued: set[str] = set()
        self._reserved = 0  # places promised to messages being inserted with our lease
        self.busy = 0

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def lag(self) -> float:
        return self.backpressure.lag()

    def drain_time(self) -> float:
        return self.backpressure.drain_time()

    async def caught_up(self) -> None:
        """SMTP calls this before taking a new transaction (`Backpressure.caught_up`)."""
        await self.backpressure.caught_up()

    def _finished(self, message_id: str) -> None:
        self.backpressure.finished(message_id)

    def _enqueue(self, message_id: str, claimed: tuple[float, int] | None) -> None:
        self._queue.put_nowait((message_id, claimed))
        self._queued.add(message_id)
        self.backpressure.joined(message_id)

    def _room(self) -> bool:
        return self._queue.qsize() + self._reserved < self.settings.queue_size

    def submit(self, message_id: str) -> None:
        """Queue a message; when the queue is full the sweeper will find it instead."""
        if message_id in self._queued:
            return
        if not self._room():
            log.warning("pipeline.queue_full", message_id=message_id)
            return
        self._enqueue(message_id, None)

    def reserve(self) -> Lease | None:
        """A lease for a message about to be inserted, with its place in the queue kept.

        Ingest writes the lease with the row, which saves the claim's commit; the caller then
        calls `claimed` or, if no row was inserted, `unreserve`.
        """
        if not self._room():
            return None
        self._reserved += 1
        return Lease(self._node, self._clock.now() + timedelta(seconds=self.settings.lease))

    def unreserve(self) -> None:
        self._reserved -= 1

    def search_queued(self) -> None:
        """Ingest committed a message's results (and so its row for the search index)."""
        self.search.queued()

    def claimed(self, message_id: str, sender: Sender | None = None) -> None:
        """The row of `message_id` was committed with the lease from `reserve` (and without
        a verdict, when `sender` is given)."""
        self._reserved -= 1
        if sender is not None and self.verifications.auth is not None:
            self._senders[message_id] = sender
        self._enqueue(message_id, (self._clock.monotonic(), 1))

    async def run(self) -> None:
        """Run the workers and the sweeper until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(self.settings.workers):
                    tg.create_task(self._worker())
                tg.create_task(self._sweeper())
                tg.create_task(self.search.run())
        finally:
            for task in list(self._background):
                task.cancel()  # their leases expire, as the workers' do

    async def release_leases(self) -> None:
        """Give back the leases this node holds (stopping), so another node need not wait for
        them to expire."""
        try:
            released = await release_node_leases(self._writer, self._node)
        except TransientError as e:
            log.warning("pipeline.release_failed", error=str(e))
            return
        if released:
            log.info("pipeline.leases_released", messages=released)

    async def _sweeper(self) -> None:
        while True:
            try:
                room = self.settings.queue_size - self._queue.qsize() - self._reserved
                if room > 0:
                    for message_id, attempt in await claim_batch(
                            self._writer, self._node, self.settings.lease, min(room, 500),
                            older_than=1.0, clock=self._clock):
                        if message_id not in self._queued:
                            self._enqueue(message_id, (self._clock.monotonic(), attempt))
            except TransientError as e:
                log.warning("pipeline.sweep_failed", error=str(e))
            await self._clock.sleep(self.settings.sweep_interval)

    async def _worker(self) -> None:
        while True:
            message_id, claimed = await self._queue.get()
            self._queued.discard(message_id)
            self.busy += 1
            try:
                await self.process(message_id, claimed)
            except Exception:
                log.exception("pipeline.worker_error", message_id=message_id)
            finally:
                self.busy -= 1
                self._finished(message_id)

    async def process(self, message_id: str,
                      claimed: tuple[float, int] | None = None) -> None:
        """Claim and extract one message; on a transient failure release it for a later retry.

        `claimed` is (when, attempt) when this node already holds the lease: ingest inserted
        the row with it, or the sweeper claimed it. A lease that has aged in the queue is
        renewed first, and given up if it is no longer ours.
        """
        sender = self._senders.pop(message_id, None)
        try:
            if claimed is None:
                attempt = await claim_message(self._writer, message_id, self._node,
                                              self.settings.lease, self._clock)
            elif self._clock.monotonic() - claimed[0] < self.settings.lease / 3 or \
                    await renew_lease(self._writer, message_id, self._node, self.settings.lease,
                                      self._clock):
                attempt = claimed[1]
            else:
                attempt = None
        except TransientError as e:
            log.warning("pipeline.claim_failed", message_id=message_id, error=str(e))
            return
        if attempt is None:
            return
        if attempt > self.settings.max_attempts:
            # Earlier attempts never reported back: the process died on this message (out of
            # memory, killed). Stop here rather than crash every node that picks it up.
            await self._fail(message_id, f"gave up after {attempt - 1} attempts that never "
                             "finished (the process died while extracting)")
            self._notifier.wake(message_id)
            return
        freed = asyncio.Event()  # set when only the sender's verdict is missing
        job = asyncio.create_task(self._extract_and_store(
            message_id, attempt, freed, sender))
        renewer = asyncio.create_task(self._renew(message_id, job))
        concluding = self._conclude(message_id, attempt, job, renewer)
        waiter = asyncio.create_task(freed.wait())
        try:
            await asyncio.wait([job, waiter], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            job.cancel()
            renewer.cancel()
            concluding.close()
            raise
        finally:
            waiter.cancel()
        if job.done():
            await concluding
            return
        # The job waits for the verdict alone (daemon.pipeline.verification): this worker
        # takes the next message.
        task = asyncio.create_task(concluding)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _conclude(self, message_id: str, attempt: int, job: asyncio.Task[None],
                        renewer: asyncio.Task[None]) -> None:
        """Wait for `job` and act on how it ended: log, fail, or release for a retry."""
        started = self._clock.monotonic()
        try:
            try:
                await job
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this node is shutting down; the lease will expire
                return  # the lease went to another node, which now owns the message
            took = self._clock.monotonic() - started
            log.info("pipeline.extracted", message_id=message_id, attempt=attempt,
                     duration_ms=round(took * 1000, 2))
            if self._metrics is not None:
                self._metrics.extraction_seconds.observe(took)
        except LeaseLost:
            log.warning("pipeline.lease_lost", message_id=message_id, attempt=attempt)
        except PermanentError as e:
            await self._fail(message_id, str(e))
        except Exception as e:
            if isinstance(e, TransientError):
                log.warning("pipeline.transient", message_id=message_id, attempt=attempt,
                            error=str(e))
                if self._metrics is not None:
                    if isinstance(e, DatabaseError):
                        self._metrics.errors.count_database("pipeline")
                    else:
                        self._metrics.errors.count_storage("pipeline")
            else:
                log.exception("pipeline.error", message_id=message_id, attempt=attempt)
            if isinstance(e, TransientError) and not isinstance(e, GpgUnavailable):
                # An outage of the store or the database is no fault of the message: it waits
                # it out (without using up attempts) for `retry_for`, like mail in a queue.
                # (gpg down costs attempts: after the last the message is recorded with its
                # signature unchecked rather than held back for days.)
                try:
                    waiting = await defer_after_transient(
                        self._writer, message_id, self._node, self.settings.retry_for,
                        clock=self._clock)
                except TransientError:
                    waiting = True  # the lease expires and the sweeper tries again
                if not waiting:
                    await self._fail(message_id, f"gave up after retrying for "
                                     f"{self.settings.retry_for:.0f} s: {e}")
            elif attempt >= self.settings.max_attempts:
                await self._fail(message_id, f"gave up after {attempt} attempts: {e}")
            else:
                with contextlib.suppress(TransientError):
                    await release_lease(self._writer, message_id, self._node,
                                        retry_in=min(2.0 ** attempt, 60.0), clock=self._clock)
        finally:
            renewer.cancel()
            self._notifier.wake(message_id)

    async def _renew(self, message_id: str, work: asyncio.Task[None]) -> None:
        """Keep the lease while `work` runs; if another node took it, stop the work."""
        while True:
            await self._clock.sleep(self.settings.lease / 3)
            try:
                still_ours = await renew_lease(self._writer, message_id, self._node,
                                               self.settings.lease, self._clock)
            except TransientError:
                continue
            if not still_ours:
                log.warning("pipeline.lease_lost", message_id=message_id)
                work.cancel()
                return

    async def _fail(self, message_id: str, reason: str) -> None:
        reason, node, now = reason[:500], self._node, self._clock.now()

        def fail(conn: Connection) -> None:
            record_failure(conn, message_id, node, reason, now)

        try:
            await self._writer.write(fail)
            self._events.wake()
            log.warning("message.state", message_id=message_id, status=FAILED)
        except TransientError as e:
            log.warning("pipeline.fail_not_recorded", message_id=message_id, error=str(e))

    async def _extract_and_store(self, message_id: str, attempt: int = 1,
                                 freed: asyncio.Event | None = None,
                                 sender: Sender | None = None) -> None:
        rkey = raw_key(message_id)
        # The worker reads the raw object from a file: the store's own when it is local, else
        # a spool copy. The message's bytes never pass through this process (nor through its
        # sender verification, which reads the same file in the verifier process).
        source = self._store.local_path(rkey)
        copy = None
        verifying: Verifying | None = None
        authentication: dict[str, Any] | None = None
        try:
            if source is None:
                source = copy = spool_name(self._store.spool_dir, "raw")
                await self._store.get_file(rkey, copy)
            verifying = await self.verifications.begin(source, message_id, sender)
            result = await self.extract_message(source)
            if copy is not None and verifying is not None:  # the copy is removed below
                authentication = await self.verifications.settle(verifying, None)
        except (ObjectNotFound, FileNotFoundError) as e:
            if verifying is not None:
                verifying.cancel()
            raise PermanentError(f"raw object missing: {rkey}") from e
        except BaseException:
            if verifying is not None:
                verifying.cancel()
            raise
        finally:
            if copy is not None:
                copy.unlink(missing_ok=True)
        found = result.found
        try:
            found, outcome = await check_signature(self._pgp, found, attempt,
                                                   self.settings.max_attempts)
            if verifying is not None and verifying.done() and authentication is None:
                authentication = await verifying
            outcome = dataclasses.replace(outcome, authentication=authentication)
            to_store = sum(p.size for p in found.attachments if p.outcome != "rejected")
            if to_store > PENDING_FIRST_ABOVE:
                # Storing will take a while: let agents see the attachments as pending first
                # (message.received waits for the verdict, if it is still to come).
                await self._record(message_id, found, final=False, outcome=outcome,
                                   hold=verifying is not None and authentication is None)
            await self.content.texts(result, self._store.spool_dir)
            outcome = outcome.reading(result, self.settings.content.index_chars)
            await self._store.put_files([(object_key(message_id, slot), Path(path))
                                         for slot, path in result.files.items()])
            if verifying is not None and authentication is None:
                authentication = await self.verifications.settle(verifying, freed)
                outcome = dataclasses.replace(outcome, authentication=authentication)
            await self._record(message_id, found, final=True, outcome=outcome)
        finally:
            remove_files(result.files)
            if verifying is not None and not verifying.done():
                verifying.cancel()

    async def extract_message(self, source: bytes | Path) -> Extracted:
        """Extract one message in a worker process, with its text; the caller owns the files."""
        return await self._extraction.extract(source, self.settings.limits,
                                              self._store.spool_dir,
                                              self.settings.content.index_chars)

    async def extract(self, source: bytes | Path) -> Extracted:
        """Extract one message and read its attachments' text, outside any job (ingest's, for
        mail it encrypts before storing); the caller owns the files."""
        result = await self.extract_message(source)
        await self.content.texts(result, self._store.spool_dir, discard_on_error=True)
        return result

    async def _record(self, message_id: str, found: Extraction, final: bool,
                      outcome: Outcome | None = None, hold: bool = False) -> None:
        """Write the message's attachment rows and headers in one transaction. Not `final`:
        every attachment `pending` (with `hold`, no message.received before the verdict).
        `final` (its bytes are stored): each one terminal, and the message too, its lease
        released. Attachment ids survive retries."""
        results = Results(message_id, found, final=final, now=self._clock.now(),
                          outcome=outcome)
        message = results.message
        c = ATTACHMENTS.c
        node = self._node
        verdict, checked = message.get("verdict"), self.verifications.auth is not None

        def record(conn: Connection) -> list[dict[str, Any]] | None:
            # The fence first: the row stays locked (PostgreSQL) until this commits, and a
            # node whose lease is gone changes nothing.
            fenced = conn.execute(fenced_update(tuple(message)), {
                "w_id": message_id, "w_owner": node,
                **{f"v_{k}": v for k, v in message.items()}})
            if not fenced.rowcount:
                return None
            earlier: dict[int, str] = {int(i): str(a) for i, a in conn.execute(
                EARLIER_ATTACHMENTS, {"message_id": message_id}).all()}
            if earlier:
                conn.execute(delete(ATTACHMENTS).where(c.message_id == message_id))
            said = verdict if verdict is not None or not checked else verdict_of(conn,
                                                                                 message_id)
            return results.write(conn, message_agents(conn, message_id), earlier, verdict=said,
                                 announce=not (hold and said is None)
                                 and announcing(conn, message_id))

        rows = await self._writer.write(record)
        if rows is None:
            raise LeaseLost(message_id)
        if final:
            self.search.queued()
        self._events.wake()
        results.log(rows)
