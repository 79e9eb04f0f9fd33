"""Delivery of outbound mail (SPEC §12): recipients claimed with leases, delivered, recorded.

A worker claims due recipients (queued, deferred past their next attempt, or `sending` under a
lease that expired with its node) in one conditional UPDATE (`FOR UPDATE SKIP LOCKED` on
PostgreSQL), groups them by message, and delivers each message once per group: recipients of
this postroom's agents through the inbound pipeline (`Ingest`, which dedupes a repeat of the same
bytes to the same recipients, so a local copy is made once however often it is retried), the
rest through the relay. Every outcome is written fenced by the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, and_, or_, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.clock import SYSTEM, Clock
from daemon.directory import Directory, Resolved
from daemon.events import Wakeups, event_rows, record_events
from daemon.outbound.relay import RecipientOutcome, RelaySettings, relay_message
from daemon.pipeline import LOCAL, Ingest
from daemon.pipeline import Delivery as InboundDelivery
from storage.db import release_leases, translated_errors
from storage.errors import ObjectNotFound, TransientError
from storage.group_commit import GroupCommit
from storage.models import (
    BOUNCED,
    DEFERRED,
    DELIVERED,
    DELIVERY_DONE,
    PARTIAL,
    PURGED,
    QUEUED,
    SENDING,
    SENT,
    Delivery,
    Message,
    Recipient,
)
from storage.objects import ObjectStore, raw_key

log = structlog.get_logger("postroom.outbound")

DELIVERIES: Any = Delivery.__table__  # type: ignore[attr-defined]
MESSAGES: Any = Message.__table__  # type: ignore[attr-defined]
RECIPIENTS: Any = Recipient.__table__  # type: ignore[attr-defined]
EVENT_OF = {SENT: "message.sent", DELIVERED: "message.delivered", DEFERRED: "message.deferred",
            BOUNCED: "message.bounced"}


@dataclass(frozen=True)
class DeliverySettings:
    workers: int = 4
    lease: float = 300.0
    poll_interval: float = 1.0
    max_age: float = 2 * 86400.0
    batch: int = 50
    retry_base: float = 60.0
    retry_max: float = 3600.0
    at_rest: str = "off"  # encryption.at_rest: local copies follow SMTP's rules for it
    relay: RelaySettings | None = None
    hostname: str = "localhost"


@dataclass(frozen=True)
class Claimed:
    id: int
    message_id: str
    address: str
    local: bool
    attempts: int


# A recipient's outcome: its claim, the status, the reply, and the bounce reason or the local
# copy's message id.
Result = tuple[Claimed, str, str, str | None]


def backoff(attempts: int, base: float = 60.0, most: float = 3600.0) -> float:
    """The pause after `attempts` failed attempts: 1 min after the first, doubling to 1 h
    (SPEC §12; `outbound.retry_base`, `outbound.retry_max`)."""
    return float(min(base * 2 ** min(max(attempts - 1, 0), 40), most))


class Deliverer:
    """The delivery workers of one node."""

    def __init__(self, settings: DeliverySettings, sessions: async_sessionmaker[AsyncSession],
                 writer: GroupCommit, store: ObjectStore, ingest: Ingest, directory: Directory,
                 events: Wakeups, node_id: str, clock: Clock = SYSTEM) -> None:
        self.settings = settings
        self._sessions = sessions
        self._writer = writer
        self._store = store
        self._ingest = ingest
        self._directory = directory
        self._events = events
        self._node = node_id
        self._clock = clock
        self._work = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.workers)

    def wake(self) -> None:
        """A send was queued here: look for due recipients now, not at the next poll."""
        self._work.set()

    async def run(self) -> None:
        """Claim and deliver until cancelled; leases left behind expire for any node."""
        while True:
            try:
                claimed = await self._claim()
            except TransientError as e:
                log.warning("outbound.claim_failed", error=str(e))
                claimed = []
            if claimed:
                by_message: dict[str, list[Claimed]] = defaultdict(list)
                for c in claimed:
                    by_message[c.message_id].append(c)
                async with asyncio.TaskGroup() as tg:
                    for group in by_message.values():
                        tg.create_task(self._deliver_in_turn(group))
                continue
            self._work.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), self.settings.poll_interval)

    async def _deliver_in_turn(self, group: list[Claimed]) -> None:
        async with self._slots:  # at most `workers` messages in delivery at once
            await self._deliver(group)

    async def _claim(self) -> list[Claimed]:
        now, c = self._clock.now(), DELIVERIES.c
        lease, owner, limit = self.settings.lease, self._node, self.settings.batch

        def claim(conn: Connection) -> list[Claimed]:
            chosen = (select(c.id).where(
                c.status.in_((QUEUED, DEFERRED, SENDING)),
                or_(c.lease_expires_at.is_(None), c.lease_expires_at < now),
                or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now))
                .order_by(c.id).limit(limit).with_for_update(skip_locked=True).cte("chosen"))
            rows = conn.execute(
                update(DELIVERIES).where(c.id == chosen.c.id)
                .values(status=SENDING, lease_owner=owner,
                        lease_expires_at=now + timedelta(seconds=lease),
                        attempts=c.attempts + 1, updated_at=now)
                .returning(c.id, c.message_id, c.address, c.local, c.attempts)).all()
            return [Claimed(int(r[0]), str(r[1]), str(r[2]), bool(r[3]), int(r[4]))
                    for r in sorted(rows, key=lambda r: int(r[0]))]

        result: list[Claimed] = await self._writer.write(claim)
        return result

    async def _deliver(self, group: list[Claimed]) -> None:
        message_id = group[0].message_id
        try:
            raw = await self._store.get(raw_key(message_id))
            sender = await self._envelope_sender(message_id)
        except ObjectNotFound:
            await self._record(message_id, [(c, BOUNCED, "the message's raw object is gone",
                                             "lost") for c in group])
            return
        except TransientError as e:
            await self._record(message_id, [(c, DEFERRED, str(e)[:300], None) for c in group])
            return
        results: list[Result] = []
        local = [c for c in group if c.local]
        remote = [c for c in group if not c.local]
        if local:
            results += await self._deliver_locally(sender, raw, local)
        if remote:
            results += await self._deliver_by_relay(sender, raw, remote)
        await self._record(message_id, results)

    async def _envelope_sender(self, message_id: str) -> str:
        async with self._sessions() as session, translated_errors():
            found = await session.execute(select(MESSAGES.c.mail_from).where(
                MESSAGES.c.id == message_id))
            return str(found.scalar_one())

    async def _deliver_locally(self, sender: str, raw: bytes, group: Sequence[Claimed]
                               ) -> list[Result]:
        """Local recipients through the inbound pipeline, under the rules SMTP applies to them
        (SPEC §8): with `encryption.at_rest = "required"` an agent without a key bounces, and
        agents stored encrypted and in the clear get one copy each kind, as a relay is asked
        to do with 452 over SMTP."""
        found = [(c, await self._directory.lookup(c.address)) for c in group]
        results: list[Result] = [(c, BOUNCED, "550 5.1.1 no such agent here any more",
                                  "unknown_recipient") for c, r in found if r is None]
        at_rest = self.settings.at_rest
        kinds: dict[bool, list[tuple[Claimed, Resolved]]] = {}
        for claimed, resolved in found:
            if resolved is None:
                continue
            keyed = at_rest != "off" and resolved.pgp_fingerprint is not None
            if at_rest == "required" and not keyed:
                results.append((claimed, BOUNCED, "550 5.7.1 the agent has no OpenPGP key and "
                                "mail must be stored encrypted", "no_key"))
                continue
            kinds.setdefault(keyed, []).append((claimed, resolved))
        for members in kinds.values():
            results += await self._ingest_copy(sender, raw, members)
        return results

    async def _ingest_copy(self, sender: str, raw: bytes,
                           members: Sequence[tuple[Claimed, Resolved]]) -> list[Result]:
        """One local copy for `members`, as if a relay had delivered it."""
        # The Received header says "with LOCAL": the message never left this postroom.
        delivery = InboundDelivery(mail_from=sender, recipients=tuple(r for _, r in members),
                                   peer="", helo=self.settings.hostname, protocol=LOCAL)
        try:
            incoming = self._ingest.begin(delivery)
            await incoming.spool.write(raw)
            accepted = await self._ingest.accept(delivery, incoming)
        except (TransientError, OSError) as e:
            return [(c, DEFERRED, f"local delivery: {type(e).__name__}", None)
                    for c, _ in members]
        return [(c, DELIVERED, f"250 delivered as {accepted.message_id}", accepted.message_id)
                for c, _ in members]

    async def _deliver_by_relay(self, sender: str, raw: bytes, group: Sequence[Claimed]
                                ) -> list[Result]:
        relay = self.settings.relay
        if relay is None:
            return [(c, BOUNCED, "no relay is configured", "no_relay") for c in group]
        outcomes: dict[str, RecipientOutcome] = {
            o.address: o for o in await relay_message(relay, sender,
                                                      [c.address for c in group], raw)}
        status = {"accepted": SENT, "refused": BOUNCED, "deferred": DEFERRED}
        return [(c, status[outcomes[c.address].verdict], outcomes[c.address].reply,
                 "rejected" if outcomes[c.address].verdict == "refused" else None)
                for c in group]

    async def _record(self, message_id: str,
                      results: Sequence[Result]) -> None:
        """Write each recipient's outcome (fenced by our lease), the message's status once
        every recipient is done, and the events, in one transaction."""
        now, owner, c = self._clock.now(), self._node, DELIVERIES.c
        max_age, base, most = (self.settings.max_age, self.settings.retry_base,
                               self.settings.retry_max)

        def write(conn: Connection) -> None:
            queued_at = _aware(conn.execute(select(MESSAGES.c.received_at).where(
                MESSAGES.c.id == message_id)).scalar_one(), now)
            kinds: list[str] = []
            for claimed, status, reply, detail in results:
                values: dict[str, Any] = {"status": status, "reply": reply, "updated_at": now,
                                          "lease_owner": None, "lease_expires_at": None}
                if status == DEFERRED:
                    if (now - queued_at).total_seconds() >= max_age:
                        status, values["status"], values["reason"] = BOUNCED, BOUNCED, "expired"
                    else:
                        values["next_attempt_at"] = now + timedelta(
                            seconds=backoff(claimed.attempts, base, most))
                elif status == BOUNCED:
                    values["reason"] = detail
                elif status == DELIVERED:
                    values["delivered_message_id"] = detail
                written = conn.execute(update(DELIVERIES).where(
                    and_(c.id == claimed.id, c.lease_owner == owner)).values(values))
                if written.rowcount == 1:
                    kinds.append(status)
            settle(conn, message_id, kinds, now)

        await self._writer.write(write)
        self._events.wake()
        for claimed, status, _, _ in results:
            log.info("outbound.recipient", message_id=message_id, delivery=claimed.id,
                     status=status, attempt=claimed.attempts, local=claimed.local)


async def release_delivery_leases(sessions: async_sessionmaker[AsyncSession],
                                  owner: str | None = None) -> int:
    """Give back the delivery leases `owner` holds (a node stopping), or every one (`None`: a
    SQLite node starting): those recipients are taken up at once, not a lease later. A
    recipient whose relay said 250 after the cancel is sent again (at least once, as an MTA's
    queue is)."""
    return await release_leases(sessions, DELIVERIES, owner)


def settle(conn: Connection, message_id: str, changes: Sequence[str], now: datetime) -> None:
    """After recipients of `message_id` changed to `changes` (statuses, in the caller's
    transaction): the message's own status once every recipient is done, and one event per
    kind of change for the sending agent."""
    c = DELIVERIES.c
    statuses = [str(s) for s in conn.execute(select(c.status).where(
        c.message_id == message_id)).scalars()]
    if statuses and all(s in DELIVERY_DONE for s in statuses):
        bounced = sum(s == BOUNCED for s in statuses)
        final = BOUNCED if bounced == len(statuses) else PARTIAL if bounced else SENT
        conn.execute(update(MESSAGES).where(MESSAGES.c.id == message_id,
                                            MESSAGES.c.status != PURGED)  # retention won
                     .values(status=final, processed_at=now))
    agents = [str(a) for a in conn.execute(select(RECIPIENTS.c.agent_id).where(
        RECIPIENTS.c.message_id == message_id)).scalars()]
    record_events(conn, [row for kind in dict.fromkeys(changes)
                         for row in event_rows(agents, EVENT_OF[kind], message_id, now,
                                               status=kind)])


def _aware(value: datetime, like: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=like.tzinfo)
