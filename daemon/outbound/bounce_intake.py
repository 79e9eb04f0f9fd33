"""Bounces arriving over SMTP at a VERP address (SPEC §12): recorded, never shown as mail.

The SMTP front asks `message_for(address)` at RCPT; such a recipient is accepted only when the
outbound message it names exists. After DATA, `record` marks each recipient the report says
`failed` as bounced (with its status and diagnostic) in one transaction, then the front says
250. A report that names no recipient of that message changes nothing.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import Connection, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.clock import SYSTEM, Clock
from daemon.events import Wakeups
from daemon.outbound.bounces import recipient_reports
from daemon.outbound.delivery import settle
from daemon.outbound.verp import bounced_message_id
from storage.db import translated_errors
from storage.group_commit import GroupCommit
from storage.models import BOUNCED, OUTBOUND, Delivery, Message

log = structlog.get_logger("postroom.outbound")
DELIVERIES: Any = Delivery.__table__  # type: ignore[attr-defined]
MESSAGES: Any = Message.__table__  # type: ignore[attr-defined]


class BounceIntake:
    """Matches DSNs to outbound messages and records them."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], writer: GroupCommit,
                 events: Wakeups, bounce_address: str | None, clock: Clock = SYSTEM) -> None:
        self._sessions = sessions
        self._writer = writer
        self._events = events
        self._bounce_address = bounce_address
        self._clock = clock

    async def message_for(self, address: str) -> str | None:
        """The outbound message a VERP `address` names, if it is one of ours."""
        message_id = bounced_message_id(address, self._bounce_address)
        if message_id is None:
            return None
        # A read: a session of its own, not a turn in the group committer's write batches.
        async with self._sessions() as session, translated_errors():
            found = (await session.execute(select(MESSAGES.c.id).where(
                MESSAGES.c.id == message_id, MESSAGES.c.direction == OUTBOUND))).first()
        return None if found is None else str(found[0])

    async def record(self, message_id: str, raw: bytes) -> int:
        """Bounce the recipients `raw` reports as failed; returns how many changed."""
        failed = {r.recipient: r for r in recipient_reports(raw) if r.action == "failed"}
        if not failed:
            log.info("outbound.bounce_ignored", message_id=message_id)
            return 0
        now, c = self._clock.now(), DELIVERIES.c

        def write(conn: Connection) -> int:
            changed = 0
            for address, report in failed.items():
                result = conn.execute(update(DELIVERIES).where(
                    c.message_id == message_id, c.address == address, c.status != BOUNCED)
                    .values(status=BOUNCED, reason="dsn", updated_at=now, lease_owner=None,
                            reply=f"{report.status} {report.diagnostic}".strip()[:1000]))
                changed += result.rowcount
            if changed:
                settle(conn, message_id, [BOUNCED], now)
            return changed

        changed: int = await self._writer.write(write)
        if changed:
            self._events.wake()
        log.info("outbound.bounce_recorded", message_id=message_id, recipients=changed)
        return changed
