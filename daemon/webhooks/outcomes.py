"""What an attempt leaves behind (SPEC §14): the delivery's new state fenced by its lease, the
attempts log, the endpoint's run of failures, and disabling; and the housekeeping of rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.events import event_rows, record_events
from daemon.webhooks.poster import Outcome
from daemon.webhooks.records import (
    ATTEMPTS,
    DELIVERIES,
    FAILING,
    GONE,
    WEBHOOKS,
    Job,
    aware,
)
from storage.db import release_leases
from storage.models import WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_PENDING

DISABLED = "disabled"  # what `record` answers for the attempt that disabled its endpoint

# Built once: deliveries come back by the hundred a second, each a statement or two.
# An attempt is fenced by the lease's owner and by its number: an attempt of this node whose
# lease ran out, claimed again since (here or elsewhere), or replayed, writes nothing.
_KEY = tuple_(DELIVERIES.c.webhook_id, DELIVERIES.c.event_seq, DELIVERIES.c.attempts)
_DELIVERED = (update(DELIVERIES)
              .where(_KEY.in_(bindparam("keys", expanding=True)),
                     DELIVERIES.c.lease_owner == bindparam("owner"))
              .values(status=WEBHOOK_DELIVERED, lease_owner=None, lease_expires_at=None,
                      updated_at=bindparam("now"))
              .returning(DELIVERIES.c.webhook_id, DELIVERIES.c.event_seq))
_ATTEMPT = ATTEMPTS.insert()
_RECOVERED = (update(WEBHOOKS).where(WEBHOOKS.c.id.in_(bindparam("ids", expanding=True)),
                                     WEBHOOKS.c.failing_since.is_not(None))
              .values(failing_since=None, updated_at=bindparam("now")))


def record_delivered(conn: Connection, done: list[tuple[Job, Outcome]], owner: str,
                     now: datetime) -> int:
    """Write many successful attempts at once (in the writer's transaction), each fenced by
    our lease as `record` does; returns how many were still ours."""
    ours = {(str(h), int(s)) for h, s in conn.execute(_DELIVERED, {
        "keys": [(job.webhook_id, job.event_seq, job.attempt) for job, _ in done], "owner": owner,
        "now": now}).all()}
    kept = [(job, outcome) for job, outcome in done if (job.webhook_id, job.event_seq) in ours]
    if kept:
        conn.execute(_ATTEMPT, [
            {"webhook_id": job.webhook_id, "event_seq": job.event_seq, "attempt": job.attempt,
             "status": WEBHOOK_DELIVERED, "status_code": outcome.status_code,
             "duration_ms": outcome.duration_ms, "error": None, "response": outcome.response,
             "attempted_at": now} for job, outcome in kept])
    recovered = sorted({job.webhook_id for job, _ in kept})
    if recovered:
        conn.execute(_RECOVERED, {"ids": recovered, "now": now})
    return len(kept)


def record(conn: Connection, job: Job, outcome: Outcome, owner: str, now: datetime,
           retries: tuple[float, ...], disable_after: float) -> str | None:
    """Write one attempt's outcome (in the writer's transaction): `delivered`, `pending` (a
    retry is due), `failed`, or DISABLED; None when our lease had run out (another node has
    the delivery, and its attempt is the one that counts)."""
    d, w = DELIVERIES.c, WEBHOOKS.c
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
    if outcome.ok:
        status = WEBHOOK_DELIVERED
    elif outcome.status_code != 410 and job.attempt <= len(retries):
        status = WEBHOOK_PENDING
        values["next_attempt_at"] = now + timedelta(seconds=retries[job.attempt - 1])
    else:
        status = WEBHOOK_FAILED
    written = conn.execute(update(DELIVERIES).where(
        d.webhook_id == job.webhook_id, d.event_seq == job.event_seq, d.lease_owner == owner,
        d.attempts == job.attempt).values(status=status, **values))
    if written.rowcount != 1:
        return None
    conn.execute(ATTEMPTS.insert().values(
        webhook_id=job.webhook_id, event_seq=job.event_seq, attempt=job.attempt, status=status,
        status_code=outcome.status_code, duration_ms=outcome.duration_ms, error=outcome.error,
        response=outcome.response, attempted_at=now))
    if outcome.ok:
        conn.execute(_RECOVERED, {"ids": [job.webhook_id], "now": now})
        return status
    hook = conn.execute(select(w.agent_id, w.failing_since, w.enabled).where(
        w.id == job.webhook_id)).one_or_none()
    if hook is None or not hook.enabled:
        return status
    since = aware(hook.failing_since, now)
    if since is None:
        since = now
        conn.execute(update(WEBHOOKS).where(w.id == job.webhook_id)
                     .values(failing_since=now, updated_at=now))
    if outcome.status_code == 410 or (now - since).total_seconds() >= disable_after:
        disable(conn, job.webhook_id, str(hook.agent_id),
                GONE if outcome.status_code == 410 else FAILING, now)
        return DISABLED
    return status


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
    return await release_leases(sessions, DELIVERIES, owner)
