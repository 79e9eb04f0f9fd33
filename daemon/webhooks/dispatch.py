"""Webhook delivery (SPEC §14): the event feed is the outbox, each endpoint a cursor into it.

Fan-out: after events commit (and at least every `poll_interval`), a pass reads the events
after the cursor of each enabled endpoint behind the newest event of its agent and picks those
it wants; one transaction then writes a delivery for each and moves the cursor, only if no
other node moved it first, so every node may fan out and an event is queued once per endpoint.
The deliveries this node has room for are written already leased to it (as ingest commits a
message leased to its node), and their POSTs start at once, while that write is under way; the
next pass does not wait for it either (it reads on from the cursors it will set): a first
attempt waits for no claim and no commit.

Delivery: the rest, retries, and deliveries whose lease expired with another node are claimed
with a lease in one conditional UPDATE. This node holds at most `held_per_endpoint` of one
endpoint and POSTs at most `per_endpoint` of them at once, `concurrency` in all, so a slow
endpoint holds only its own slots; a slot starts its next POST as soon as one ends, and the
outcome is written afterwards, fenced by the lease (`outcomes.record`).

At least once: a node that dies leaves its leases to expire; one killed between the POST and
the write of its outcome has the delivery made again, with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter, deque
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, func, or_, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.clock import SYSTEM, Clock
from daemon.events import Wakeups
from daemon.ids import event_id_for
from daemon.webhooks.outcomes import DISABLED, prune, record, record_delivered
from daemon.webhooks.poster import Outcome, Poster
from daemon.webhooks.records import (
    AGENTS,
    DELIVERIES,
    EVENTS,
    WEBHOOKS,
    Job,
    WebhookSettings,
    aware,
    deliverable,
    feed_after,
    payload,
    pending,
)
from daemon.webhooks.signing import signed_headers
from storage.db import Conflict, insert_ignoring_conflicts, translated_errors
from storage.errors import StorageError, TransientError
from storage.group_commit import GroupCommit
from storage.models import WEBHOOK_PENDING

log = structlog.get_logger("postroom.webhooks")

FLUSH_LINGER = 0.02  # seconds a success waits for others before its outcome is written

HOOK_COLUMNS = (WEBHOOKS.c.id, WEBHOOKS.c.url, WEBHOOKS.c.secret, WEBHOOKS.c.previous_secret,
                WEBHOOKS.c.previous_until)


class Dispatcher:
    """The webhook fan-out and delivery of one node."""

    def __init__(self, settings: WebhookSettings, sessions: async_sessionmaker[AsyncSession],
                 writer: GroupCommit, events: Wakeups, node_id: str,
                 clock: Clock = SYSTEM, single_node: bool = False) -> None:
        self.settings = settings
        # The only node of its database (SQLite): a pass may POST before its write commits.
        # With several, a node POSTs only what its cursor move won, or two would send each.
        self._eager = single_node
        self._sessions = sessions
        self._writer = writer
        self._events = events
        self._node = node_id
        self._clock = clock
        self._poster = Poster(settings.timeout, settings.allow_private_networks,
                              settings.concurrency)
        self._queues: dict[str, deque[Job]] = {}  # held here, not yet POSTed, per endpoint
        self._posting: Counter[str] = Counter()  # POSTs under way, per endpoint
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()  # a POST ended or deliveries were queued: claim more
        self._backlog = True  # due deliveries may wait unleased: claim as slots free up
        self._delivered: list[tuple[Job, Outcome]] = []  # successes not yet written
        self._flusher: asyncio.Task[None] | None = None
        self._enabled: tuple[bool, float] | None = None  # any endpoint enabled, and when read
        self._ahead: dict[str, int] = {}  # cursors that passes' writes under way will set
        self.outcomes: Counter[str] = Counter()  # POSTs by outcome (GET /metrics)

    async def run(self) -> None:
        """Fan out, deliver and prune until cancelled; leases left behind expire for any node."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._fan_out_forever())
                tg.create_task(self._claim_forever())
                tg.create_task(self._prune_forever())
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            # Successes already made are written, so a restart does not send them again.
            done, self._delivered = self._delivered, []
            if done:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._writer.write(functools.partial(
                        record_delivered, done=done, owner=self._node,
                        now=self._clock.now())), 5)

    def forget(self, webhook_id: str) -> None:
        """Drop the deliveries of an endpoint held here and not yet POSTed (it was disabled,
        deleted or moved): their leases expire and whoever claims them reads it afresh."""
        self._queues.pop(webhook_id, None)

    async def close(self) -> None:
        await self._poster.close()

    def wake(self) -> None:
        """An endpoint changed here (created, enabled, replayed): fan out and claim now, not
        at the next poll."""
        self._enabled = None
        self._backlog = True
        self._room.set()
        self._events.wake()

    # What this node holds ------------------------------------------------------------------

    def _held(self, webhook_id: str) -> int:
        return len(self._queues.get(webhook_id, ())) + self._posting[webhook_id]

    def _room_for(self) -> tuple[int, dict[str, int], int]:
        """Deliveries this node may still take in all, the room left of the endpoints it
        holds some of (others have `held_per_endpoint`), and that default."""
        each = self.settings.held_per_endpoint
        held = {hook: self._held(hook) for hook in {*self._queues, *self._posting}}
        total = self.settings.concurrency * 4 - sum(held.values())
        return max(total, 0), {hook: max(each - n, 0) for hook, n in held.items()}, each

    def _take(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._queues.setdefault(job.webhook_id, deque()).append(job)
        self._start()

    def _start(self) -> None:
        """Start the POSTs the slots allow, oldest held first per endpoint."""
        margin = self.settings.timeout + 5.0
        for hook in list(self._queues):
            queue = self._queues[hook]
            while queue and self._posting[hook] < self.settings.per_endpoint and \
                    sum(self._posting.values()) < self.settings.concurrency:
                job = queue.popleft()
                if self._clock.monotonic() > job.deadline - margin:
                    continue  # its lease may run out mid-POST: left to expire, claimed again
                self._posting[hook] += 1
                task = asyncio.create_task(self._post(job), name=f"webhook-{job.event_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if not queue:
                del self._queues[hook]

    async def _post(self, job: Job) -> None:
        try:
            headers = signed_headers(job.secrets, job.event_id,
                                     int(self._clock.now().timestamp()), job.body)
            outcome = await self._poster.post(job.url, headers, job.body)
        finally:
            self._posting[job.webhook_id] -= 1
            if self._posting[job.webhook_id] <= 0:
                del self._posting[job.webhook_id]
            self._start()  # the slot's next POST, before this one's outcome is written
            if self._backlog and self._held(job.webhook_id) <= self.settings.per_endpoint:
                self._room.set()  # claim the endpoint's next few at once, not one by one
        log.info("webhooks.attempt", webhook_id=job.webhook_id, event_id=job.event_id,
                 attempt=job.attempt, status_code=outcome.status_code, ok=outcome.ok,
                 duration_ms=outcome.duration_ms)
        if outcome.ok:  # written with the others that succeeded meanwhile
            self._delivered.append((job, outcome))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush())
                self._tasks.add(self._flusher)
                self._flusher.add_done_callback(self._tasks.discard)
            return
        try:
            await self._record(job, outcome)
        except TransientError as e:  # the lease expires and the delivery is made again
            log.warning("webhooks.record_failed", webhook_id=job.webhook_id, error=str(e))

    async def _flush(self) -> None:
        while self._delivered:
            # A moment for the successes of the next few POSTs to join: one commit for all.
            await asyncio.sleep(FLUSH_LINGER)
            done, self._delivered = self._delivered, []
            try:
                self.outcomes["delivered"] += await self._writer.write(functools.partial(
                    record_delivered, done=done, owner=self._node, now=self._clock.now()))
            except TransientError as e:  # the leases expire and those are made again
                log.warning("webhooks.record_failed", deliveries=len(done), error=str(e))

    async def _record(self, job: Job, outcome: Outcome) -> None:
        result = await self._writer.write(functools.partial(
            record, job=job, outcome=outcome, owner=self._node, now=self._clock.now(),
            retries=self.settings.retries, disable_after=self.settings.disable_after))
        if result is not None:
            self.outcomes[{WEBHOOK_PENDING: "retry"}.get(result, result)] += 1
        if result == DISABLED:
            self.forget(job.webhook_id)
            self._events.wake()
            log.warning("webhooks.disabled", webhook_id=job.webhook_id,
                        status_code=outcome.status_code)

    def _jobs(self, rows: list[tuple[int, Any, Any]], now: datetime, mono: float) -> list[Job]:
        """Jobs of leased deliveries: (attempt, endpoint row, event row) each, their leases
        written as running from `now` (`mono` on the monotonic clock)."""
        deadline = mono + self.settings.lease
        jobs = []
        for attempt, hook, event in rows:
            secrets = [hook.secret]
            until = aware(hook.previous_until, now)
            if hook.previous_secret and until is not None and until > now:
                secrets.append(hook.previous_secret)
            jobs.append(Job(str(hook.id), attempt, int(event.seq), str(hook.url),
                            tuple(secrets), event_id_for(int(event.seq)), payload(event),
                            deadline))
        return jobs

    # Fan-out -------------------------------------------------------------------------------

    async def _fan_out_forever(self) -> None:
        while True:
            seen = self._events.changes
            queued = 0
            try:
                if await self._any():
                    queued = await self._fan_out()
            except (StorageError, Conflict) as e:
                log.warning("webhooks.fan_out_failed", error=str(e))
            if queued or self._events.changes != seen:
                continue  # more may be waiting (an endpoint takes `batch` events per pass)
            await self._events.wait(self.settings.poll_interval)

    async def _any(self) -> bool:
        """Whether any endpoint is enabled (on any node), read again at most every
        `poll_interval` or at once after a change here: with none, events cost no pass."""
        now = self._clock.monotonic()
        if self._enabled is None or now - self._enabled[1] >= self.settings.poll_interval:
            async with self._sessions() as session, translated_errors():
                found = (await session.execute(select(WEBHOOKS.c.id).where(
                    WEBHOOKS.c.enabled).limit(1))).first()
            self._enabled = (found is not None, now)
        return self._enabled[0]

    async def _fan_out(self) -> int:
        """One pass: read the events after each endpoint's cursor, start the POSTs this node
        has room for at once, and have their deliveries (leased here), the rest and the moved
        cursors written while they go; returns how many events the pass took.

        Neither the POSTs nor the next pass wait for that write (the next reads on from the
        cursors it will set, `_ahead`). If it fails, or the node dies first, the cursors have
        not moved and the events are sent again (at least once), with the same ids. An
        outcome is written after the pass's write (the writer keeps order), fenced by the
        lease that write gave."""
        w, e = WEBHOOKS.c, EVENTS.c
        now, mono = self._clock.now(), self._clock.monotonic()
        newest = select(func.max(e.seq)).where(e.agent_id == w.agent_id).scalar_subquery()
        plan: list[tuple[Any, int, list[Any], list[int]]] = []
        async with self._sessions() as session, translated_errors():
            behind = (await session.execute(
                select(*HOOK_COLUMNS, w.agent_id, w.event_types, w.cursor, AGENTS.c.accept)
                .join(AGENTS, AGENTS.c.id == w.agent_id)
                .where(w.enabled, w.cursor < newest))).all()
            for hook in behind:
                if hook.cursor >= self._ahead.get(hook.id, 0):  # its writes are all in
                    self._ahead.pop(hook.id, None)
                start = max(hook.cursor, self._ahead.get(hook.id, 0))
                rows = list((await session.execute(
                    feed_after(start, full=True).where(e.agent_id == hook.agent_id)
                    .limit(self.settings.batch))).all())
                if rows:
                    plan.append((hook, start, rows, deliverable(rows, hook.event_types,
                                                                hook.id, hook.accept)))
        if not plan:
            return 0
        total, rooms, each = self._room_for()
        leased: list[tuple[Any, list[int], list[int]]] = []
        jobs: list[tuple[int, Any, Any]] = []
        for hook, _, rows, seqs in plan:
            mine = min(total, rooms.get(hook.id, each), len(seqs))
            total -= mine
            leased.append((hook, seqs[:mine], seqs[mine:]))
            by_seq = {r.seq: r for r in rows}
            jobs += [(1, hook, by_seq[s]) for s in seqs[:mine]]
        cursors = {hook.id: (start, rows[-1].seq) for hook, start, rows, _ in plan}
        if self._eager:
            self._ahead.update({hook: new for hook, (_, new) in cursors.items()})
            # Made before the POSTs' tasks, so it is queued to the writer before any outcome.
            task = asyncio.create_task(self._write_pass(leased, cursors, now))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._take(self._jobs(jobs, now, mono))
        else:
            moved = await self._writer.write(functools.partial(
                self._write_fan_out, leased=leased, cursors=cursors, now=now))
            self._take(self._jobs([j for j in jobs if j[1].id in moved], now, mono))
        if any(rest for _, _, rest in leased):
            self._backlog = True  # some are left for the claims
            self._room.set()
        return sum(len(rows) for _, _, rows, _ in plan)

    async def _write_pass(self, leased: list[tuple[Any, list[int], list[int]]],
                          cursors: dict[str, tuple[int, int]], now: datetime) -> None:
        moved: set[str] = set()
        try:
            moved = await self._writer.write(functools.partial(
                self._write_fan_out, leased=leased, cursors=cursors, now=now))
        except (StorageError, Conflict) as e:
            log.warning("webhooks.fan_out_failed", error=str(e))
        finally:
            self._settle_ahead(cursors, moved)

    def _settle_ahead(self, cursors: dict[str, tuple[int, int]], moved: set[str]) -> None:
        for hook, (_, new) in cursors.items():
            if hook not in moved and self._ahead.get(hook) == new:
                # Read on from the database's cursor again (a pass planned on this one
                # fails as this did, and comes here in turn).
                self._ahead.pop(hook, None)

    def _write_fan_out(self, conn: Connection, leased: list[tuple[Any, list[int], list[int]]],
                       cursors: dict[str, tuple[int, int]], now: datetime) -> set[str]:
        """The pass's deliveries and cursors (in the writer's transaction), for each
        endpoint whose cursor is where the pass read from (no other node, no failed write
        moved it) and which is still enabled; returns those endpoints."""
        w = WEBHOOKS.c
        expires = now + timedelta(seconds=self.settings.lease)
        moved: set[str] = set()
        for hook, mine, rest in leased:
            old, new = cursors[hook.id]
            if conn.execute(update(WEBHOOKS).where(w.id == hook.id, w.cursor == old, w.enabled)
                            .values(cursor=new)).rowcount != 1:
                continue  # its POSTs were sent twice: another node's are the ones that count
            moved.add(hook.id)
            if mine:
                conn.execute(insert_ignoring_conflicts(conn, DELIVERIES), [
                    {**row, "lease_owner": self._node, "lease_expires_at": expires,
                     "attempts": 1} for row in pending(hook.id, mine, now)])
            if rest:
                conn.execute(insert_ignoring_conflicts(conn, DELIVERIES),
                             pending(hook.id, rest, now))
        return moved

    # Claims --------------------------------------------------------------------------------

    async def _claim_forever(self) -> None:
        while True:
            self._room.clear()
            total, rooms, each = self._room_for()
            if total > 0:
                try:
                    now, mono = self._clock.now(), self._clock.monotonic()
                    rows, self._backlog = await self._writer.write(functools.partial(
                        self._claim, now=now, total=total, rooms=rooms, each=each))
                    self._take(self._jobs(rows, now, mono))
                except (StorageError, Conflict) as e:
                    log.warning("webhooks.claim_failed", error=str(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), self.settings.poll_interval)

    def _claim(self, conn: Connection, now: datetime, total: int, rooms: dict[str, int],
               each: int) -> tuple[list[tuple[int, Any, Any]], bool]:
        """Lease due deliveries to this node, within its room per endpoint and in all; and
        whether due ones may be left (room ran out before the candidates did)."""
        d, w = DELIVERIES.c, WEBHOOKS.c
        full = [hook for hook, n in rooms.items() if n <= 0]
        candidates = conn.execute(
            select(d.id, d.webhook_id).join(WEBHOOKS, w.id == d.webhook_id)
            .where(d.status == WEBHOOK_PENDING, d.next_attempt_at <= now, w.enabled,
                   or_(d.lease_expires_at.is_(None), d.lease_expires_at < now),
                   d.webhook_id.not_in(full))
            .order_by(d.next_attempt_at, d.id).limit(total * 2)).all()
        chosen: list[int] = []
        taken: Counter[str] = Counter()
        for row in candidates:
            if len(chosen) < total and taken[row.webhook_id] < rooms.get(row.webhook_id, each):
                taken[row.webhook_id] += 1
                chosen.append(row.id)
        left = len(chosen) < len(candidates) or len(candidates) == total * 2 or bool(full)
        if not chosen:
            return [], left
        claimed = conn.execute(
            update(DELIVERIES).where(
                d.id.in_(chosen), d.status == WEBHOOK_PENDING,
                or_(d.lease_expires_at.is_(None), d.lease_expires_at < now))
            .values(lease_owner=self._node, attempts=d.attempts + 1, updated_at=now,
                    lease_expires_at=now + timedelta(seconds=self.settings.lease))
            .returning(d.id, d.webhook_id, d.event_seq, d.attempts)).all()
        if not claimed:
            return [], left
        hooks = {r.id: r for r in conn.execute(select(*HOOK_COLUMNS).where(
            w.id.in_({c.webhook_id for c in claimed}))).all()}
        events = {r.seq: r for r in conn.execute(select(EVENTS).where(
            EVENTS.c.seq.in_({c.event_seq for c in claimed}))).all()}
        # An event that is gone (its agent deleted) has nothing to send: its lease expires.
        return [(int(c.attempts), hooks[c.webhook_id], events[c.event_seq])
                for c in sorted(claimed, key=lambda c: int(c.id)) if c.event_seq in events], left

    # Housekeeping --------------------------------------------------------------------------

    async def _prune_forever(self) -> None:
        every = min(3600.0, self.settings.log_for / 4)
        while True:
            await self._clock.sleep(every)
            cutoff = self._clock.now() - timedelta(seconds=self.settings.log_for)
            try:
                await self._writer.write(functools.partial(prune, cutoff=cutoff))
            except TransientError as e:
                log.warning("webhooks.prune_failed", error=str(e))
