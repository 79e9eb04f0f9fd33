"""An agent's webhook endpoints (SPEC §14): create, list, read, change, delete, rotate the
secret, the attempts log, replay. The API's routes are thin calls of these.

Every call takes the agent's id and finds only that agent's endpoints: another agent's id is
`None` here and 404 to the caller. Disabling an endpoint (by PATCH, by 410, by failing for
`disable_after`) fails its pending deliveries; enabling it again starts from the next event,
and `replay` sends the ones in between.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.clock import SYSTEM, Clock, iso
from daemon.ids import event_id_for, new_webhook_id
from daemon.webhooks.outcomes import disable
from daemon.webhooks.records import (
    AGENTS,
    ATTEMPTS,
    DELIVERIES,
    EVENTS,
    MANUAL,
    SECRET_OVERLAP,
    WEBHOOKS,
    WebhookSettings,
    check_types,
    deliverable,
    feed_after,
    pending,
)
from daemon.webhooks.safety import UnsafeUrl, parse_url, resolve
from daemon.webhooks.signing import new_secret
from storage.db import insert_ignoring_conflicts, translated_errors
from storage.group_commit import GroupCommit
from storage.models import WEBHOOK_PENDING

MAX_REPLAY = 10000  # events one replay call queues; `has_more` says to call again


class WebhookRefused(Exception):
    """A request about webhooks that cannot be done: HTTP status, code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def webhook_view(row: Any, secret: str | None = None) -> dict[str, Any]:
    view = {"id": row.id, "url": row.url,
            "event_types": None if row.event_types is None else json.loads(row.event_types),
            "description": row.description, "enabled": bool(row.enabled),
            "disabled_reason": row.disabled_reason, "failing_since": iso(row.failing_since),
            "cursor": str(row.cursor), "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at)}
    if secret is not None:
        view["secret"] = secret
    return view


def attempt_view(row: Any) -> dict[str, Any]:
    return {"id": str(row.id), "event_id": event_id_for(row.event_seq),
            "cursor": str(row.event_seq), "attempt": row.attempt, "status": row.status,
            "status_code": row.status_code, "duration_ms": row.duration_ms,
            "error": row.error, "response": row.response, "attempted_at": iso(row.attempted_at)}


class Endpoints:
    """The webhook calls of the API, on one node."""

    def __init__(self, settings: WebhookSettings, sessions: async_sessionmaker[AsyncSession],
                 writer: GroupCommit, wake: Callable[[], None] = lambda: None,
                 forget: Callable[[str], None] = lambda _: None, clock: Clock = SYSTEM) -> None:
        self.settings = settings
        self._sessions = sessions
        self._writer = writer
        self._wake = wake  # an endpoint was created, enabled or disabled, or deliveries queued
        self._forget = forget  # drop what this node holds of an endpoint (its URL is stale)
        self._clock = clock

    async def _checked_url(self, url: str) -> str:
        try:
            await resolve(parse_url(url), self.settings.allow_private_networks,
                          self.settings.timeout)
        except UnsafeUrl as e:
            raise WebhookRefused(422, "invalid_url", str(e)) from None
        return url

    @staticmethod
    def _types(types: list[str] | None) -> str | None:
        try:
            return check_types(types)
        except ValueError as e:
            raise WebhookRefused(422, "invalid_request", str(e)) from None

    async def create(self, agent_id: str, url: str, event_types: list[str] | None,
                     description: str | None) -> dict[str, Any]:
        """A new endpoint; its view carries the secret, shown this once. It gets the events
        from now on."""
        url, types = await self._checked_url(url), self._types(event_types)
        now, secret, most = self._clock.now(), new_secret(), self.settings.max_per_agent
        w = WEBHOOKS.c

        def write(conn: Connection) -> Any:
            count = conn.execute(select(func.count()).select_from(WEBHOOKS)
                                 .where(w.agent_id == agent_id)).scalar_one()
            if count >= most:
                return None
            row = {"id": new_webhook_id(), "agent_id": agent_id, "url": url,
                   "event_types": types, "description": description, "enabled": True,
                   "secret": secret, "cursor": _newest(conn, agent_id), "created_at": now,
                   "updated_at": now}
            conn.execute(WEBHOOKS.insert().values(row))
            return conn.execute(select(WEBHOOKS).where(w.id == row["id"])).one()

        row = await self._writer.write(write)
        if row is None:
            raise WebhookRefused(409, "too_many_webhooks",
                                 f"an agent has at most {most} webhooks (webhooks.max_per_agent)")
        self._wake()
        return webhook_view(row, secret)

    async def of_agent(self, agent_id: str) -> list[dict[str, Any]]:
        async with self._sessions() as session, translated_errors():
            rows = (await session.execute(select(WEBHOOKS).where(
                WEBHOOKS.c.agent_id == agent_id).order_by(WEBHOOKS.c.created_at))).all()
        return [webhook_view(r) for r in rows]

    async def get(self, agent_id: str, webhook_id: str) -> dict[str, Any] | None:
        async with self._sessions() as session, translated_errors():
            row = (await session.execute(select(WEBHOOKS).where(
                WEBHOOKS.c.id == webhook_id, WEBHOOKS.c.agent_id == agent_id))).one_or_none()
        return None if row is None else webhook_view(row)

    async def change(self, agent_id: str, webhook_id: str, changes: dict[str, Any]
                     ) -> dict[str, Any] | None:
        """PATCH: `url`, `event_types`, `description`, `enabled` (what is given changes)."""
        values: dict[str, Any] = {}
        if "url" in changes:
            values["url"] = await self._checked_url(changes["url"])
        if "event_types" in changes:
            values["event_types"] = self._types(changes["event_types"])
        if "description" in changes:
            values["description"] = changes["description"]
        enabled = changes.get("enabled")
        now, w = self._clock.now(), WEBHOOKS.c

        def write(conn: Connection) -> Any:
            row = conn.execute(select(w.enabled).where(
                w.id == webhook_id, w.agent_id == agent_id)).one_or_none()
            if row is None:
                return None
            if enabled is False and row.enabled:
                disable(conn, webhook_id, agent_id, MANUAL, now)
            elif enabled is True and not row.enabled:  # from the next event on
                values.update(enabled=True, disabled_reason=None, failing_since=None,
                              cursor=_newest(conn, agent_id))
            if "url" in values and (enabled is None or enabled):  # claimed again, to it
                d = DELIVERIES.c
                conn.execute(update(DELIVERIES).where(
                    d.webhook_id == webhook_id, d.status == WEBHOOK_PENDING)
                    .values(lease_owner=None, lease_expires_at=None, updated_at=now))
            conn.execute(update(WEBHOOKS).where(w.id == webhook_id)
                         .values(updated_at=now, **values))
            return conn.execute(select(WEBHOOKS).where(w.id == webhook_id)).one()

        found = await self._writer.write(write)
        if found is not None:
            if enabled is False or "url" in values:
                self._forget(webhook_id)  # nothing claimed goes to the old URL, or at all
            if enabled is not None:
                self._wake()  # from the next event on; or its webhook.disabled event
        return None if found is None else webhook_view(found)

    async def delete(self, agent_id: str, webhook_id: str) -> bool | None:
        """True once gone; None: no such webhook of this agent."""
        def write(conn: Connection) -> bool:
            gone = conn.execute(delete(WEBHOOKS).where(
                WEBHOOKS.c.id == webhook_id, WEBHOOKS.c.agent_id == agent_id)).rowcount == 1
            if gone:
                conn.execute(delete(DELIVERIES).where(DELIVERIES.c.webhook_id == webhook_id))
                conn.execute(delete(ATTEMPTS).where(ATTEMPTS.c.webhook_id == webhook_id))
            return gone

        if not await self._writer.write(write):
            return None
        self._forget(webhook_id)
        return True

    async def rotate_secret(self, agent_id: str, webhook_id: str) -> dict[str, Any] | None:
        """A new secret (shown once); the old one still signs, beside it, for 24 hours."""
        now, secret, w = self._clock.now(), new_secret(), WEBHOOKS.c

        def write(conn: Connection) -> Any:
            old = conn.execute(select(w.secret).where(
                w.id == webhook_id, w.agent_id == agent_id)).scalar_one_or_none()
            if old is None:
                return None
            conn.execute(update(WEBHOOKS).where(w.id == webhook_id).values(
                secret=secret, previous_secret=old, updated_at=now,
                previous_until=now + timedelta(seconds=SECRET_OVERLAP)))
            return conn.execute(select(WEBHOOKS).where(w.id == webhook_id)).one()

        row = await self._writer.write(write)
        return None if row is None else webhook_view(row, secret)

    async def attempts(self, agent_id: str, webhook_id: str, limit: int,
                       before: int | None) -> tuple[list[dict[str, Any]], bool] | None:
        """The attempts log, newest first, `limit` at a time before attempt `before`."""
        a = ATTEMPTS.c
        if await self.get(agent_id, webhook_id) is None:
            return None
        stmt = select(ATTEMPTS).where(a.webhook_id == webhook_id)
        if before is not None:
            stmt = stmt.where(a.id < before)
        async with self._sessions() as session, translated_errors():
            rows = (await session.execute(stmt.order_by(a.id.desc()).limit(limit + 1))).all()
        return [attempt_view(r) for r in rows[:limit]], len(rows) > limit

    async def replay(self, agent_id: str, webhook_id: str, after: int
                     ) -> dict[str, Any] | None:
        """Deliver again every event after `after` up to the endpoint's cursor that it wants
        (the ones after its cursor are on their way already), at most MAX_REPLAY a call."""
        now, w, e, d = self._clock.now(), WEBHOOKS.c, EVENTS.c, DELIVERIES.c

        def write(conn: Connection) -> dict[str, Any] | None:
            hook = conn.execute(select(w.enabled, w.cursor, w.event_types, AGENTS.c.accept)
                                .join(AGENTS, AGENTS.c.id == w.agent_id)
                                .where(w.id == webhook_id, w.agent_id == agent_id)).one_or_none()
            if hook is None:
                return None
            if not hook.enabled:
                return {"disabled": True}
            rows = conn.execute(feed_after(after).where(
                e.agent_id == agent_id, e.seq <= hook.cursor).limit(MAX_REPLAY + 1)).all()
            more, rows = len(rows) > MAX_REPLAY, rows[:MAX_REPLAY]
            seqs = deliverable(rows, hook.event_types, webhook_id, hook.accept)
            if seqs:
                conn.execute(update(DELIVERIES).where(d.webhook_id == webhook_id,
                                                      d.event_seq.in_(seqs))
                             .values(status=WEBHOOK_PENDING, attempts=0, next_attempt_at=now,
                                     lease_owner=None, lease_expires_at=None, updated_at=now))
                conn.execute(insert_ignoring_conflicts(conn, DELIVERIES),
                             pending(webhook_id, seqs, now))
            last = rows[-1].seq if rows else max(after, 0)
            return {"queued": len(seqs), "next_cursor": str(last), "has_more": more}

        result = await self._writer.write(write)
        if result is not None and result.get("disabled"):
            raise WebhookRefused(409, "webhook_disabled", "enable the webhook before replaying")
        if result and result["queued"]:
            self._wake()
        return result


def _newest(conn: Connection, agent_id: str) -> int:
    """The cursor of the agent's newest event (0: none yet)."""
    return int(conn.execute(select(func.coalesce(func.max(EVENTS.c.seq), 0)).where(
        EVENTS.c.agent_id == agent_id)).scalar_one())
