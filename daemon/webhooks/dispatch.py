"""Webhook delivery (SPEC §14): the event feed is the outbox, each endpoint a cursor into it.

Fan-out: after events commit (and at least every `poll_interval`), each enabled endpoint behind
the newest event of its agent reads the events after its cursor, gets a pending delivery for
each it wants, and moves its cursor, in one transaction; the cursor moves only if no other
node moved it first, so every node may fan out and an event is queued once per endpoint.

Delivery: workers claim due deliveries with a lease (as extraction claims messages) in one
conditional UPDATE, never more than `per_endpoint` of one endpoint on this node and
`concurrency` in all, so a slow endpoint holds only its own slots. Each outcome is written
fenced by the lease, with the attempt's log row; a 2xx is `delivered`, anything else is
retried on SPEC §14's schedule, then `failed`. An endpoint answering 410, or failing for
`disable_after`, is disabled with a `webhook.disabled` event.

At least once: a node that dies leaves its leases to expire; one killed between the POST and
the write of its outcome has the delivery made again, with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.clock import SYSTEM, Clock
from daemon.events import Wakeups, event_rows, record_events
from daemon.ids import event_id_for
from daemon.webhooks.poster import Outcome, Poster
from daemon.webhooks.records import (
    AGENTS,
    ATTEMPTS,
    DELIVERIES,
    EVENTS,
    FAILING,
    GONE,
    WEBHOOKS,
    WebhookSettings,
    aware,
    deliverable,
    feed_after,
    payload,
    pending,
)
from daemon.webhooks.signing import signed_headers
from storage.db import insert_ignoring_conflicts, translated_errors
from storage.errors import TransientError
from storage.group_commit import GroupCommit
from storage.models import WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_PENDING

log = structlog.get_logger("postroom.webhooks")


@dataclass(frozen=True)
class Job:
    """A claimed delivery with what its POST needs."""

    id: int
    webhook_id: str
    attempt: int
    event_seq: int
    url: str
    secrets: tuple[str, ...]
    event_id: str
    body: bytes


class Dispatcher:
    """The webhook fan-out and delivery workers of one node."""

    def __init__(self, settings: WebhookSettings, sessions: async_sessionmaker[AsyncSession],
                 writer: GroupCommit, events: Wakeups, node_id: str,
                 clock: Clock = SYSTEM) -> None:
        self.settings = settings
        self._sessions = sessions
        self._writer = writer
        self._events = events
        self._node = node_id
        self._clock = clock
        self._poster = Poster(settings.timeout, settings.allow_private_networks,
                              settings.concurrency)
        self._queued = asyncio.Event()  # fan-out queued deliveries: claim now
        self._finished = asyncio.Event()  # a POST finished: a slot is free
        self._busy: Counter[str] = Counter()  # POSTs under way here, per endpoint
        self._posts: set[asyncio.Task[None]] = set()
        self._enabled: tuple[bool, float] | None = None  # any endpoint enabled, and when read
        self.outcomes: Counter[str] = Counter()  # POSTs by outcome (GET /metrics)

    @property
    def in_flight(self) -> int:
        return len(self._posts)

    async def run(self) -> None:
        """Fan out, deliver and prune until cancelled; leases left behind expire for any node."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._fan_out_forever())
                tg.create_task(self._deliver_forever())
                tg.create_task(self._prune_forever())
        finally:
            for task in list(self._posts):
                task.cancel()
            await asyncio.gather(*self._posts, return_exceptions=True)

    async def close(self) -> None:
        await self._poster.close()

    # Fan-out -------------------------------------------------------------------------------

    async def _fan_out_forever(self) -> None:
        while True:
            seen = self._events.changes
            try:
                queued = await self._writer.write(self._fan_out) if await self._any() else 0
            except TransientError as e:
                log.warning("webhooks.fan_out_failed", error=str(e))
                queued = 0
            if queued:
                self._queued.set()
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

    def _fan_out(self, conn: Connection) -> int:
        """Queue the deliveries of every event after each endpoint's cursor (in the writer's
        transaction); returns how many."""
        w, e, now = WEBHOOKS.c, EVENTS.c, self._clock.now()
        newest = select(func.max(e.seq)).where(e.agent_id == w.agent_id).scalar_subquery()
        behind = conn.execute(
            select(w.id, w.agent_id, w.event_types, w.cursor, AGENTS.c.accept)
            .join(AGENTS, AGENTS.c.id == w.agent_id)
            .where(w.enabled, w.cursor < newest)).all()
        queued = 0
        for hook in behind:
            rows = conn.execute(feed_after(hook.cursor).where(e.agent_id == hook.agent_id)
                                .limit(self.settings.batch)).all()
            if not rows:
                continue
            moved = conn.execute(update(WEBHOOKS).where(w.id == hook.id, w.cursor == hook.cursor)
                                 .values(cursor=rows[-1].seq))
            if moved.rowcount != 1:  # another node fanned this endpoint out first
                continue
            seqs = deliverable(rows, hook.event_types, hook.id, hook.accept)
            if seqs:
                conn.execute(insert_ignoring_conflicts(conn, DELIVERIES),
                             pending(hook.id, seqs, now))
                queued += len(seqs)
        return queued

    # Delivery ------------------------------------------------------------------------------

    def wake(self) -> None:
        """An endpoint changed here (created, enabled, replayed): fan out and claim now, not
        at the next poll."""
        self._enabled = None
        self._queued.set()
        self._events.wake()

    async def _deliver_forever(self) -> None:
        while True:
            free = self.settings.concurrency - len(self._posts)
            jobs: list[Job] = []
            if free > 0:
                try:
                    jobs = await self._claim(free)
                except TransientError as e:
                    log.warning("webhooks.claim_failed", error=str(e))
            for job in jobs:
                self._busy[job.webhook_id] += 1
                task = asyncio.create_task(self._post(job), name=f"webhook-{job.id}")
                self._posts.add(task)
                task.add_done_callback(self._posts.discard)
            if jobs and len(jobs) == free:
                await self._finished.wait()  # every slot is taken
            elif not jobs:
                await _first(self._queued, self._finished, within=self.settings.poll_interval)
            self._queued.clear()
            self._finished.clear()

    async def _claim(self, free: int) -> list[Job]:
        now, d, w = self._clock.now(), DELIVERIES.c, WEBHOOKS.c
        full = [hook for hook, n in self._busy.items() if n >= self.settings.per_endpoint]
        busy = dict(self._busy)
        per_endpoint, owner = self.settings.per_endpoint, self._node
        expires = now + timedelta(seconds=self.settings.lease)

        def claim(conn: Connection) -> list[Any]:
            candidates = conn.execute(
                select(d.id, d.webhook_id).join(WEBHOOKS, w.id == d.webhook_id)
                .where(d.status == WEBHOOK_PENDING, d.next_attempt_at <= now, w.enabled,
                       or_(d.lease_expires_at.is_(None), d.lease_expires_at < now),
                       d.webhook_id.not_in(full))
                .order_by(d.next_attempt_at, d.id).limit(free * 4)).all()
            chosen: list[int] = []
            taken: Counter[str] = Counter(busy)
            for row in candidates:
                if len(chosen) < free and taken[row.webhook_id] < per_endpoint:
                    taken[row.webhook_id] += 1
                    chosen.append(row.id)
            if not chosen:
                return []
            claimed = conn.execute(
                update(DELIVERIES).where(
                    d.id.in_(chosen), d.status == WEBHOOK_PENDING,
                    or_(d.lease_expires_at.is_(None), d.lease_expires_at < now))
                .values(lease_owner=owner, lease_expires_at=expires, attempts=d.attempts + 1,
                        updated_at=now)
                .returning(d.id, d.webhook_id, d.event_seq, d.attempts)).all()
            if not claimed:
                return []
            hooks = {r.id: r for r in conn.execute(
                select(w.id, w.url, w.secret, w.previous_secret, w.previous_until)
                .where(w.id.in_({c.webhook_id for c in claimed}))).all()}
            events = {r.seq: r for r in conn.execute(
                select(EVENTS).where(EVENTS.c.seq.in_({c.event_seq for c in claimed}))).all()}
            return [(c, hooks[c.webhook_id], events.get(c.event_seq)) for c in claimed]

        jobs: list[Job] = []
        for c, hook, event in await self._writer.write(claim):
            if event is None:  # the event is gone (its agent was deleted): nothing to send
                continue
            secrets = [hook.secret]
            until = aware(hook.previous_until, now)
            if hook.previous_secret and until is not None and until > now:
                secrets.append(hook.previous_secret)
            jobs.append(Job(int(c.id), str(c.webhook_id), int(c.attempts), int(c.event_seq),
                            str(hook.url), tuple(secrets), event_id_for(int(c.event_seq)),
                            payload(event)))
        return jobs

    async def _post(self, job: Job) -> None:
        try:
            headers = signed_headers(job.secrets, job.event_id,
                                     int(self._clock.now().timestamp()), job.body)
            outcome = await self._poster.post(job.url, headers, job.body)
            try:
                await self._record(job, outcome)
            except TransientError as e:  # the lease expires and the delivery is made again
                log.warning("webhooks.record_failed", webhook_id=job.webhook_id, error=str(e))
        finally:
            self._busy[job.webhook_id] -= 1
            if self._busy[job.webhook_id] <= 0:
                del self._busy[job.webhook_id]
            self._finished.set()

    async def _record(self, job: Job, outcome: Outcome) -> None:
        """The attempt's outcome, fenced by our lease, with its log row; the endpoint disabled
        when it answered 410 or has failed for `disable_after`."""
        now, d, w, owner = self._clock.now(), DELIVERIES.c, WEBHOOKS.c, self._node
        retries, disable_after = self.settings.retries, self.settings.disable_after

        def write(conn: Connection) -> str | None:
            values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None,
                                      "updated_at": now}
            if outcome.ok:
                status = WEBHOOK_DELIVERED
            elif outcome.status_code != 410 and job.attempt <= len(retries):
                status = WEBHOOK_PENDING
                values["next_attempt_at"] = now + timedelta(seconds=retries[job.attempt - 1])
            else:
                status = WEBHOOK_FAILED
            written = conn.execute(update(DELIVERIES).where(
                d.id == job.id, d.lease_owner == owner).values(status=status, **values))
            if written.rowcount != 1:
                return None  # our lease expired and another node has it
            conn.execute(ATTEMPTS.insert().values(
                webhook_id=job.webhook_id, event_seq=job.event_seq,
                attempt=job.attempt, status=status, status_code=outcome.status_code,
                duration_ms=outcome.duration_ms, error=outcome.error,
                response=outcome.response, attempted_at=now))
            if outcome.ok:
                conn.execute(update(WEBHOOKS).where(w.id == job.webhook_id,
                                                    w.failing_since.is_not(None))
                             .values(failing_since=None, updated_at=now))
                return status
            hook = conn.execute(select(w.agent_id, w.failing_since, w.enabled).where(
                w.id == job.webhook_id)).one_or_none()
            if hook is None or not hook.enabled:
                return status
            since = aware(hook.failing_since, now) or now
            if since == now:
                conn.execute(update(WEBHOOKS).where(w.id == job.webhook_id)
                             .values(failing_since=now, updated_at=now))
            if outcome.status_code == 410 or (now - since).total_seconds() >= disable_after:
                disable(conn, job.webhook_id, str(hook.agent_id),
                        GONE if outcome.status_code == 410 else FAILING, now)
                return "disabled"
            return status

        result = await self._writer.write(write)
        if result is not None:
            self.outcomes[{WEBHOOK_PENDING: "retry"}.get(result, result)] += 1
        if result == "disabled":
            self._events.wake()
            log.warning("webhooks.disabled", webhook_id=job.webhook_id,
                        status_code=outcome.status_code)
        log.info("webhooks.attempt", webhook_id=job.webhook_id, delivery=job.id,
                 event_id=job.event_id, attempt=job.attempt, status_code=outcome.status_code,
                 ok=outcome.ok, duration_ms=outcome.duration_ms)

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


def disable(conn: Connection, webhook_id: str, agent_id: str, reason: str,
            now: datetime) -> None:
    """Disable an endpoint (in the caller's transaction): its pending deliveries become
    `failed` (replayable), and its agent gets a `webhook.disabled` event."""
    w, d = WEBHOOKS.c, DELIVERIES.c
    conn.execute(update(WEBHOOKS).where(w.id == webhook_id).values(
        enabled=False, disabled_reason=reason, updated_at=now))
    conn.execute(update(DELIVERIES).where(d.webhook_id == webhook_id,
                                          d.status == WEBHOOK_PENDING)
                 .values(status=WEBHOOK_FAILED, lease_owner=None, lease_expires_at=None,
                         updated_at=now))
    record_events(conn, event_rows([agent_id], "webhook.disabled", None, now, status=reason,
                                   webhook_id=webhook_id))


def prune(conn: Connection, cutoff: datetime) -> None:
    """Forget attempts, and finished deliveries, older than `cutoff`."""
    conn.execute(delete(ATTEMPTS).where(ATTEMPTS.c.attempted_at < cutoff))
    conn.execute(delete(DELIVERIES).where(
        DELIVERIES.c.status.in_((WEBHOOK_DELIVERED, WEBHOOK_FAILED)),
        DELIVERIES.c.updated_at < cutoff))


async def release_webhook_leases(sessions: async_sessionmaker[AsyncSession],
                                 owner: str | None = None) -> int:
    """Give back the delivery leases `owner` holds (a node stopping), or every one (`None`: a
    SQLite node starting, whose leases can only be a dead run's)."""
    d = DELIVERIES.c
    held = d.lease_owner.is_not(None) if owner is None else d.lease_owner == owner
    async with sessions() as session, translated_errors():
        result = await session.execute(update(DELIVERIES).where(held)
                                       .values(lease_owner=None, lease_expires_at=None))
        await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


async def _first(*events: asyncio.Event, within: float) -> None:
    """Return when any of `events` is set, or after `within` seconds."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
