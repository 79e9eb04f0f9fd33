"""What the webhook parts share: the settings, the tables, the event types an endpoint may
want, and the one body every POST carries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from daemon.clock import iso
from daemon.config import WebhooksConfig
from daemon.events import EVENT_TYPES, event_view
from storage.models import (
    INBOUND,
    WEBHOOK_PENDING,
    Agent,
    Event,
    Message,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)

WEBHOOKS: Any = Webhook.__table__  # type: ignore[attr-defined]
DELIVERIES: Any = WebhookDelivery.__table__  # type: ignore[attr-defined]
ATTEMPTS: Any = WebhookAttempt.__table__  # type: ignore[attr-defined]
EVENTS: Any = Event.__table__  # type: ignore[attr-defined]
MESSAGES: Any = Message.__table__  # type: ignore[attr-defined]
AGENTS: Any = Agent.__table__  # type: ignore[attr-defined]

GONE, FAILING, MANUAL = "gone", "failing", "manual"  # why an endpoint is disabled
SECRET_OVERLAP = 86400.0  # a rotated-out secret still signs for a day


@dataclass(frozen=True)
class Job:
    """A delivery this node holds the lease of (or is writing leased to itself), with what
    its POST needs; (webhook_id, event_seq) is the delivery's key."""

    webhook_id: str
    attempt: int
    event_seq: int
    url: str
    secrets: tuple[str, ...]  # the current secret, then one rotated out less than a day ago
    event_id: str
    body: bytes
    deadline: float  # monotonic: after it the lease may be another node's


@dataclass(frozen=True)
class WebhookSettings:
    """`[webhooks]` as the parts use it (defaults and meanings: daemon/config/)."""

    timeout: float
    disable_after: float
    allow_private_networks: bool
    retries: tuple[float, ...]  # the pause before each retry; after the last, `failed`
    concurrency: int  # POSTs at once on this node
    per_endpoint: int  # of them, to one endpoint
    max_per_agent: int
    log_for: float  # attempts and finished deliveries are kept this long
    poll_interval: float = 1.0
    batch: int = 500  # events one endpoint takes per fan-out pass

    @classmethod
    def of(cls, config: WebhooksConfig) -> WebhookSettings:
        return cls(config.timeout, config.disable_after, config.allow_private_networks,
                   tuple(config.retries), config.concurrency, config.per_endpoint,
                   config.max_per_agent, config.log_for)

    @property
    def lease(self) -> float:
        """How long a claimed delivery is this node's: its wait in the endpoint's queue here
        (a POST starts only with `timeout` and a margin left), the POST, and the write of its
        outcome. A node that dies holds its deliveries this long; one whose lease ran out is
        made again by any node."""
        return max(10.0, 6 * self.timeout)

    @property
    def held_per_endpoint(self) -> int:
        """Deliveries of one endpoint this node holds at once: POSTs under way, and the next
        ones claimed already, so a slot never waits on the database between two POSTs."""
        return 4 * self.per_endpoint


def wanted_types(stored: str | None) -> frozenset[str] | None:
    """An endpoint's `event_types` as stored (JSON; None: every type)."""
    return None if stored is None else frozenset(json.loads(stored))


def check_types(types: list[str] | None) -> str | None:
    """`event_types` as given → as stored; ValueError names an unknown type."""
    if types is None:
        return None
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}")
    if not types:
        raise ValueError("at least one event type, or leave event_types out for all")
    return json.dumps(sorted(set(types)))


def deliverable(rows: Sequence[Any], stored_types: str | None, webhook_id: str,
                accept: str) -> list[int]:
    """The events of `rows` (seq, type, webhook_id, and its message's direction and verdict)
    an endpoint gets: the types it wants, never its own `webhook.disabled`, and for an agent
    accepting only authenticated mail (SPEC §13) none of quarantined mail."""
    types = wanted_types(stored_types)
    quarantines = accept == "authenticated"
    return [int(r.seq) for r in rows
            if (types is None or r.type in types) and r.webhook_id != webhook_id
            and not (quarantines and r.message_direction == INBOUND
                     and r.message_verdict != "pass")]


def feed_after(after: int, full: bool = False) -> Any:
    """The columns `deliverable` reads (with `full`, every column of the event too), of the
    events after `after`, in order (add the agent and the bounds)."""
    e, m = EVENTS.c, MESSAGES.c
    columns = [*EVENTS.c] if full else [e.seq, e.type, e.webhook_id]
    extra = [m.thread_id.label("message_thread_id"), m.preview.label("message_preview")] \
        if full else []
    return (select(*columns, m.direction.label("message_direction"),
                   m.verdict.label("message_verdict"), *extra)
            .outerjoin(MESSAGES, m.id == e.message_id).where(e.seq > after).order_by(e.seq))


def pending(webhook_id: str, seqs: Sequence[int], now: datetime) -> list[dict[str, Any]]:
    """New delivery rows of `seqs`, due now."""
    return [{"webhook_id": webhook_id, "event_seq": s, "status": WEBHOOK_PENDING,
             "attempts": 0, "next_attempt_at": now, "created_at": now, "updated_at": now}
            for s in seqs]


def payload(event: Any) -> bytes:
    """The body of a POST: `{"type", "timestamp", "data": <the feed's event object>}`."""
    return json.dumps({"type": event.type, "timestamp": iso(event.created_at),
                       "data": event_view(event)}, separators=(",", ":")).encode()


def aware(value: datetime | None, like: datetime) -> datetime | None:
    """A stored time as an aware one (SQLite gives them back naive, in UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=like.tzinfo)
