"""`GET /metrics` (SPEC §9): Prometheus text, from prometheus-client, one registry per daemon.

Most numbers already live where the work happens (the SMTP counters, the pipeline's queue, the
group committer); a collector reads them at scrape time, so the hot paths pay nothing for
metrics. Only the extraction latency is a histogram observed as jobs finish. Counts of messages
and attachments by status come from the database, at most once every few seconds however often
Prometheus scrapes. No label ever carries an address, a name or content.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.agents import utcnow
from storage.db import translated_errors
from storage.errors import TransientError
from storage.models import UNFINISHED, Attachment, Message, WebhookDelivery

log = structlog.get_logger("postroom.metrics")

MESSAGES = Message.__table__  # type: ignore[attr-defined]
ATTACHMENTS = Attachment.__table__  # type: ignore[attr-defined]
WEBHOOK_DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DB_EVERY = 5.0  # seconds between two reads of the status counts


@dataclass
class Errors:
    """Failures of the database and the object store, by operation, counted where caught."""

    database: dict[str, int] = field(default_factory=dict)
    storage: dict[str, int] = field(default_factory=dict)

    def count_database(self, operation: str) -> None:
        self.database[operation] = self.database.get(operation, 0) + 1

    def count_storage(self, operation: str) -> None:
        self.storage[operation] = self.storage.get(operation, 0) + 1


@dataclass
class Sources:
    """Where the collector reads each number (callables, so nothing here imports the daemon's
    moving parts)."""

    smtp: Any  # daemon.smtp.SmtpCounters
    queue_depth: Callable[[], int]
    busy_workers: Callable[[], int]
    commits: Callable[[], tuple[int, int, int]]  # (batches, writes, failures) of the writer
    errors: Errors
    # Webhook POSTs of this node by outcome: delivered, retry, failed (daemon.webhooks).
    webhooks: Callable[[], dict[str, int]] = dict


@dataclass
class _StatusCounts:
    messages: dict[str, int] = field(default_factory=dict)
    attachments: dict[str, int] = field(default_factory=dict)
    oldest_unfinished: float = 0.0  # seconds since the oldest unfinished message arrived
    leased: int = 0
    webhook_deliveries: dict[str, int] = field(default_factory=dict)
    at: float = -_DB_EVERY


class Metrics:
    """The registry of one daemon and what feeds it."""

    def __init__(self, sources: Sources, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._sources = sources
        self.errors = sources.errors
        self._sessions = sessions
        self._counts = _StatusCounts()
        self.extraction_seconds = Histogram(
            "postroom_extraction_seconds", "Time from a job's start to its result recorded",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry)
        self.registry.register(_Collector(self))

    async def refresh(self) -> None:
        """Re-read the status counts when the last read is older than a few seconds."""
        if time.monotonic() - self._counts.at < _DB_EVERY:
            return
        counts = _StatusCounts(at=time.monotonic())
        try:
            async with self._sessions() as session, translated_errors():
                for table, into in ((MESSAGES, counts.messages),
                                    (ATTACHMENTS, counts.attachments),
                                    (WEBHOOK_DELIVERIES, counts.webhook_deliveries)):
                    rows = await session.execute(select(table.c.status, func.count())
                                                 .group_by(table.c.status))
                    into.update({str(s): int(n) for s, n in rows.all()})
                oldest, leased = (await session.execute(
                    select(func.min(MESSAGES.c.received_at),
                           func.count(MESSAGES.c.lease_owner))
                    .where(MESSAGES.c.status.in_(UNFINISHED)))).one()
        except TransientError as e:
            self._sources.errors.count_database("metrics")
            log.warning("metrics.refresh_failed", error=str(e))
            self._counts.at = time.monotonic()  # keep the last numbers, try again later
            return
        if oldest is not None:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=utcnow().tzinfo)
            counts.oldest_unfinished = max(0.0, (utcnow() - oldest).total_seconds())
        counts.leased = int(leased or 0)
        self._counts = counts

    async def render(self) -> bytes:
        await self.refresh()
        return bytes(generate_latest(self.registry))


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> Sequence[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        s = self._m._sources
        smtp = s.smtp
        yield _gauge("postroom_smtp_connections_open", "SMTP connections open now",
                     smtp.open_connections)
        yield _counter("postroom_smtp_connections", "SMTP connections accepted",
                       smtp.connections_total)
        transactions = CounterMetricFamily("postroom_smtp_transactions",
                                           "SMTP transactions (DATA) by reply code",
                                           labels=["code"])
        for code, n in sorted(smtp.transactions.items()):
            transactions.add_metric([str(code)], n)
        yield transactions
        yield _counter("postroom_smtp_received_bytes", "Bytes of message data received",
                       smtp.bytes_received)
        yield _gauge("postroom_smtp_in_data", "Transactions receiving DATA now", smtp.in_data)
        yield _gauge("postroom_pipeline_queue_depth", "Extraction jobs queued on this node",
                     s.queue_depth())
        yield _gauge("postroom_pipeline_busy_workers", "Extraction jobs running on this node",
                     s.busy_workers())
        batches, writes, failures = s.commits()
        yield _counter("postroom_database_commits", "Group commits of this node", batches)
        yield _counter("postroom_database_writes", "Writes committed in those groups", writes)
        yield _counter("postroom_database_commit_failures",
                       "Group commits that failed (451 or a retried job)", failures)
        for name, by_op, what in (("database", s.errors.database, "database"),
                                  ("storage", s.errors.storage, "object store")):
            errors = CounterMetricFamily(f"postroom_{name}_errors",
                                         f"Failures of the {what}, by operation",
                                         labels=["operation"])
            for op, n in sorted(by_op.items()):
                errors.add_metric([op], n)
            yield errors
        attempts = CounterMetricFamily("postroom_webhook_attempts",
                                       "Webhook POSTs of this node, by outcome",
                                       labels=["outcome"])
        for outcome, n in sorted(s.webhooks().items()):
            attempts.add_metric([outcome], n)
        yield attempts
        counts = self._m._counts
        for name, by_status, what in (("messages", counts.messages, "Messages"),
                                      ("attachments", counts.attachments, "Attachments"),
                                      ("webhook_deliveries", counts.webhook_deliveries,
                                       "Webhook deliveries kept")):
            statuses = GaugeMetricFamily(f"postroom_{name}", f"{what} by status (every node)",
                                         labels=["status"])
            for status, n in sorted(by_status.items()):
                statuses.add_metric([status], n)
            yield statuses
        yield _gauge("postroom_unfinished_oldest_seconds",
                     "Age of the oldest message not yet extracted (every node)",
                     counts.oldest_unfinished)
        yield _gauge("postroom_leases_held", "Unfinished messages under a lease (every node)",
                     counts.leased)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
