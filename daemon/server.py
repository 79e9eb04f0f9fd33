"""The daemon as one coroutine: SMTP, HTTP, extraction workers and the directory in one loop.

`serve()` reads as what it does: `Node.assemble` opens the parts (database, store, keyring,
directory, pipeline, SMTP and HTTP fronts), `Node.start` starts each long-lived task by name,
and on SIGTERM/SIGINT `Node.drain` stops them by name, in the order the data flows: stop
accepting, let transactions already in DATA finish under a deadline, answer 421 to the rest,
finish the accepts under way, and leave unfinished extraction to the leases. This module is the
one place that owns signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import structlog
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.agents import AgentError, create_agent, find_agent, set_accept, set_pgp_key
from daemon.api import (
    ApiContext,
    BodyLimit,
    LargerBody,
    Lookups,
    allowed_hosts,
    create_app,
    streamed_routes,
)
from daemon.config import Config, parse_listen
from daemon.directory import Directory
from daemon.events import Wakeups
from daemon.openpgp import OpenPgp, read_public_key
from daemon.ops import Errors, Metrics, Sources, SystemdNotifier, run_periodically
from daemon.outbound import (
    BounceIntake,
    Deliverer,
    DeliverySettings,
    DkimKeyError,
    Outbox,
    OutboxSettings,
    RelaySettings,
    load_key,
    release_delivery_leases,
)
from daemon.passwords import AuthUsers
from daemon.pipeline import ExtractionPool, Ingest, Pipeline, PipelineSettings, release_all_leases
from daemon.sender_auth import SenderAuth
from daemon.smtp import (
    COMMAND_CALL_LIMITS,
    PostroomHandler,
    PostroomLMTP,
    PostroomSMTP,
    SmtpCounters,
    TlsError,
    TlsFiles,
    load_tls,
    parse_networks,
)
from daemon.webhooks import Dispatcher, Endpoints, WebhookSettings, release_webhook_leases
from extractors import Limits
from storage.db import open_database
from storage.errors import SchemaMismatch, TransientError
from storage.group_commit import GroupCommit
from storage.local import LocalStore, load_or_create_secret
from storage.objects import ObjectStore
from storage.presign import UrlSigner
from storage.spool import Spooler, clear_stale

log = structlog.get_logger("postroom.server")


class StartupError(Exception):
    """The daemon cannot start; the message says why."""

    def __str__(self) -> str:
        return f"cannot start: {super().__str__()}"


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: `serve()` owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def build_store(config: Config) -> ObjectStore:
    """The object store the configuration names, ready to use (its client open)."""
    storage = config.storage
    if storage.backend == "s3":
        if storage.bucket is None:  # the config refuses this; a caller that built one by hand
            raise StartupError('storage.bucket is required when storage.backend = "s3"')
        # Imported here: aioboto3 and its stack cost ~20 MiB that a local-store node never needs.
        from storage.s3 import S3Store

        return await S3Store.open(storage.bucket, prefix=storage.key_prefix,
                                  endpoint_url=storage.endpoint_url, region=storage.region,
                                  spool_dir=storage.spool_path)
    secret = (storage.signing_key.encode() if storage.signing_key
              else load_or_create_secret(storage.signing_key_file))
    return LocalStore(storage.path, UrlSigner(secret), config.http.public_url)


async def prepare_database(
    config: Config,
) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """Engine and sessions, with the schema current (SQLite upgrades itself; others must be)."""
    try:
        return await open_database(config.database.url, config.database.busy_timeout,
                                   config.database.pool_size)
    except SchemaMismatch as e:
        raise StartupError(str(e)) from None


async def ensure_config_agents(config: Config,
                               sessions: async_sessionmaker[AsyncSession]) -> None:
    """Create the agents config.toml declares; print a new agent's key once."""
    for spec in config.agents:
        try:
            pgp_key = None if spec.openpgp_public_key_file is None else await asyncio.to_thread(
                read_public_key, spec.openpgp_public_key_file, config.encryption.gpg)
        except AgentError as e:
            raise StartupError(f"agents ({spec.name}): {e}") from e
        existing = await find_agent(sessions, spec.name)
        if existing is not None:
            if pgp_key is not None and existing.pgp_fingerprint != pgp_key.fingerprint:
                # The file is the source of truth for an agent declared in config.toml.
                await set_pgp_key(sessions, spec.name, pgp_key)
                log.info("agent.pgp_key_set", agent_id=existing.id,
                         fingerprint=pgp_key.fingerprint)
            if spec.accept is not None and existing.accept != spec.accept:
                await set_accept(sessions, spec.name, spec.accept)
            continue
        key = config.agent_keys.get(spec.api_key_env) if spec.api_key_env else None
        try:
            info, api_key = await create_agent(sessions, spec.name, spec.addresses, api_key=key,
                                               pgp_key=pgp_key, accept=spec.accept or "all")
        except AgentError as e:
            raise StartupError(f"agents: {e}") from e
        log.info("agent.created", agent_id=info.id, name=info.name, addresses=list(info.addresses))
        if key is None:
            # Shown once, on the terminal, as SPEC §2 asks; never through the log pipeline.
            print(f"\npostroom: created agent {info.name!r}\n"
                  f"  address: {', '.join(info.addresses)}\n"
                  f"  API key: {api_key}   (shown once; `postroom agent rotate-key {info.name}` "
                  "makes a new one)\n", file=sys.stderr, flush=True)


LISTEN_BACKLOG = 1024  # pending connections the kernel queues (capped by net.core.somaxconn)


def _bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot listen on {listen}: {e.strerror}") from e
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def _addr(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Node:
    """One node's parts and long-lived tasks. Built by `assemble`, nothing runs until `start`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.node_id = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.systemd = SystemdNotifier()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._closers: list[Callable[[], Awaitable[None] | None]] = []
        self._reload_hooks: list[Callable[[], None]] = []  # SIGHUP: things that re-read files
        self._reloads: set[asyncio.Task[None]] = set()

    @classmethod
    async def assemble(cls, config: Config) -> Node:
        """Open every part; on failure close what was opened and raise."""
        node = cls(config)
        try:
            await node._open()
        except BaseException:
            await node.close()
            raise
        return node

    async def _open(self) -> None:
        config, p = self.config, self.config.pipeline
        try:  # a bad certificate or key stops the start before anything is opened
            tls = load_tls(config.smtp.tls_cert, config.smtp.tls_key)
        except TlsError as e:
            raise StartupError(str(e)) from e
        if tls is not None:
            self._reload_hooks.append(tls.reload)  # a bad file keeps the old context (logged)
        self.engine, self.sessions = await prepare_database(config)
        self._closers.append(self.engine.dispose)
        self.store = await build_store(config)
        self._closers.append(self.store.close)
        try:
            await self.store.check()
        except TransientError as e:
            # Not fatal: SMTP answers 451 and /readyz says why until the store answers.
            log.warning("storage.unavailable", error=str(e))
        await ensure_config_agents(config, self.sessions)
        if config.is_sqlite:  # one node: every lease left is a dead run's
            await release_all_leases(self.sessions)
            await release_delivery_leases(self.sessions)
            await release_webhook_leases(self.sessions)

        self.directory = Directory(self.sessions, p.directory_refresh)
        await self.directory.reload()
        self.pgp = OpenPgp(config.encryption, self.sessions, self.directory)
        await self.pgp.start()
        self.message_changes = Wakeups()  # a message's state changed (GET …?wait=)
        self.event_feed = Wakeups()  # events were committed (GET /v1/events?wait=)
        stale = clear_stale(self.store.spool_dir)  # before any worker process writes there
        if stale:
            log.info("daemon.spool_cleared", files=stale)
        self.extraction = ExtractionPool(p.extract_processes)
        self._closers.append(self.extraction.close)
        await self.extraction.start()
        self.writer = GroupCommit(self.engine, busy_timeout=config.database.busy_timeout)
        self._closers.append(self.writer.close)
        self.counters = SmtpCounters()
        self.metrics = Metrics(Sources(
            smtp=self.counters, queue_depth=lambda: self.pipeline.depth,
            busy_workers=lambda: self.pipeline.busy,
            commits=lambda: (self.writer.batches, self.writer.writes, self.writer.failures),
            errors=Errors(), webhooks=lambda: self.dispatcher.outcomes), self.sessions)
        limits = config.limits
        if (sender_auth := SenderAuth.of(config.auth, config.smtp.hostname,
                                         in_process=p.extract_processes == 0)) is not None:
            self._closers.append(sender_auth.close)  # (None: auth.enabled = false)
            await sender_auth.start()
        self.pipeline = Pipeline(
            PipelineSettings(p.workers, p.queue_size, p.lease, p.sweep_interval, p.max_attempts,
                             Limits(limits.max_attachment_size, limits.max_parts,
                                    limits.max_depth), p.transient_retry_for, p.max_lag,
                             config.content),
            self.sessions, self.writer, self.store, self.extraction, self.node_id,
            self.message_changes, self.event_feed, self.pgp, self.metrics,
            incoming=lambda: self.counters.in_data, sender_auth=sender_auth)
        self._closers.append(self.pipeline.content.close)
        self.spooler = Spooler(self.store.spool_dir, config.smtp.spool_threshold)
        self._closers.append(self.spooler.close)
        self.ingest = Ingest(self.sessions, self.writer, self.store, self.spooler,
                             config.smtp.hostname, p.dedupe_window, jobs=self.pipeline,
                             events=self.event_feed, pgp=self.pgp, extract=self.pipeline.extract,
                             verifications=self.pipeline.verifications)
        self._open_outbound()
        self._open_webhooks()
        self.smtp_socks = [_bind(listen) for listen in config.smtp.listen]
        self.http_socks = [_bind(listen) for listen in config.http.listen]
        self._open_smtp(tls)
        self._open_http()

    def _open_outbound(self) -> None:
        out = self.config.outbound
        try:
            keys = tuple(load_key(k.domain, k.selector, k.key_file, k.algorithm) for k in out.dkim)
        except DkimKeyError as e:
            raise StartupError(f"outbound.dkim: {e}") from e
        relay = None if out.relay is None else RelaySettings(
            out.relay, out.relay_tls, out.relay_username, out.relay_password, out.timeout,
            self.config.smtp.hostname)
        self.deliverer = Deliverer(
            DeliverySettings(out.workers, poll_interval=out.poll_interval, max_age=out.max_age,
                             relay=relay, hostname=self.config.smtp.hostname,
                             retry_base=out.retry_base, retry_max=out.retry_max,
                             at_rest=self.config.encryption.at_rest),
            self.sessions, self.writer, self.store, self.ingest, self.directory,
            self.event_feed, self.node_id)
        self.bounces = BounceIntake(self.sessions, self.writer, self.event_feed,
                                    out.bounce_address)
        self.outbox = Outbox(
            OutboxSettings(self.config.smtp.max_message_size, out.max_recipients,
                           out.rate_per_agent, relay is not None, out.bounce_address, keys),
            self.sessions, self.store, self.directory, self.event_feed, self.deliverer.wake)

    def _open_webhooks(self) -> None:
        settings = WebhookSettings.of(self.config.webhooks)
        self.dispatcher = Dispatcher(settings, self.sessions, self.writer, self.event_feed,
                                     self.node_id, single_node=self.config.is_sqlite)
        self._closers.append(self.dispatcher.close)
        self.webhooks = Endpoints(settings, self.sessions, self.writer, self.dispatcher.wake,
                                  self.dispatcher.forget)

    def _open_smtp(self, tls: TlsFiles | None) -> None:
        smtp = self.config.smtp
        lmtp = smtp.protocol == "lmtp"
        handler = PostroomHandler(self.directory, self.ingest, smtp.max_message_size,
                                  smtp.max_recipients, "LMTP" if lmtp else "ESMTP",
                                  self.counters, at_rest=self.config.encryption.at_rest,
                                  bounces=self.bounces)
        networks = parse_networks(smtp.trusted_networks)
        users = AuthUsers(smtp.auth_users) if smtp.auth_users else None
        protocol = PostroomLMTP if lmtp else PostroomSMTP
        proxy_timeout = smtp.proxy_protocol_timeout if smtp.proxy_protocol else None
        self.connections: set[PostroomSMTP] = set()

        def connection() -> PostroomSMTP:
            return protocol(handler, self.counters, networks, smtp.max_connections,
                            connections=self.connections, tls=tls, users=users,
                            require_tls=smtp.require_tls, proxy_timeout=proxy_timeout,
                            hostname=smtp.hostname, timeout=smtp.timeout, enable_SMTPUTF8=True,
                            data_size_limit=None, ident=f"postroom {handler.protocol_name}",
                            command_call_limit=dict(COMMAND_CALL_LIMITS),
                            loop=asyncio.get_running_loop())

        self._smtp_connection = connection
        self.smtp_servers: list[asyncio.Server] = []

    def _open_http(self) -> None:
        config = self.config
        self.lookups = Lookups(self.engine)
        self._closers.append(self.lookups.close)
        app = create_app(ApiContext(
            self.sessions, self.store, self.message_changes, config.storage.presign_ttl,
            config.http.max_wait, lookups=self.lookups, upload_max_bytes=config.uploads.max_bytes,
            events=self.event_feed, metrics=self.metrics, outbox=self.outbox,
            spooler=self.spooler, webhooks=self.webhooks,
            mcp_hosts=tuple(allowed_hosts(config.http.listen, config.http.public_url)),
            search_caught_up=self.pipeline.search.caught_up))
        # A message to send (postroom's route, the seeds') is up to the size it may have as mail.
        sends = [LargerBody("POST", path, 2 * config.smtp.max_message_size)
                 for path in ("/v1/messages", "/api/v1/inboxes/", "/inboxes/")]
        bounded = BodyLimit(app, config.http.max_body,
                            (*streamed_routes(config.uploads.max_bytes), *sends))
        self.http = _QuietServer(uvicorn.Config(bounded, log_level="warning", access_log=False,
                                                lifespan="on", timeout_graceful_shutdown=5,
                                                server_header=False))

    def _run(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        self.tasks[name] = asyncio.create_task(work, name=name)

    async def start(self) -> None:
        """Start accepting and every long-lived task; return once HTTP answers."""
        loop = asyncio.get_running_loop()
        # create_server listens again, with its own default of 100 unless told: a burst of relays
        # connecting at once would then see dropped SYNs and a second's retransmit delay.
        self.smtp_servers = [await loop.create_server(self._smtp_connection, sock=s,
                                                      backlog=LISTEN_BACKLOG)
                             for s in self.smtp_socks]
        self._run("http", self.http.serve(sockets=self.http_socks))
        self._run("pipeline", self.pipeline.run())
        self._run("directory", self.directory.run())
        self._run("group-commit", self.writer.run())
        self._run("delivery", self.deliverer.run())
        self._run("webhooks", self.dispatcher.run())
        if self.systemd.watchdog_interval is not None:
            self._run("watchdog", self.systemd.watchdog())
        if self.config.retention.days > 0:
            self._run("gc", run_periodically(self.store, self.sessions,
                                             self.config.retention.days,
                                             every=self.config.retention.interval))
        if self.systemd.enabled:
            self._run("status", self.systemd.status(self.describe))
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        http = self.tasks["http"]
        while not self.http.started and not http.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.01)
        log.info("daemon.ready", smtp=[_addr(s) for s in self.smtp_socks],
                 http=[_addr(s) for s in self.http_socks], node=self.node_id,
                 database="sqlite" if self.config.is_sqlite else "postgresql",
                 storage=self.config.storage.backend)
        self.systemd.send("READY=1", "STATUS=accepting mail on "
                          + ", ".join(_addr(s) for s in self.smtp_socks))

    def describe(self) -> str:
        """One line for `systemctl status`."""
        c = self.counters
        sent = sum(c.transactions.values())
        return (f"{c.open_connections} connections, {sent} transactions "
                f"({c.transactions.get('250', 0)} accepted), queue {self.pipeline.depth}, "
                f"extracting {self.pipeline.busy}")

    async def reload(self) -> None:
        """SIGHUP: re-read agents (and, with TLS, the certificate files) without dropping a
        connection; systemd sees RELOADING=1 … READY=1 around it."""
        self.systemd.reloading()
        log.info("daemon.reloading")
        try:
            await self.directory.reload()
            for hook in self._reload_hooks:
                await asyncio.to_thread(hook)
        except Exception as e:  # a bad file: keep serving with what was loaded before
            log.error("daemon.reload_failed", error=str(e))
        else:
            log.info("daemon.reloaded", agents=len(set(self.directory.fingerprints) |
                                                   set(self.directory.agent_ids())))
        self.systemd.send("READY=1", f"STATUS={self.describe()}")

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def run_until(self, stop: asyncio.Event) -> int:
        """Wait for `stop` or for a task to end (each runs for the node's life: one that ends
        is a failure); returns the exit status."""
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *self.tasks.values()],
                                     return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        status = 0
        for task in done:
            if task is not stopper and task.exception() is not None:
                log.error("daemon.task_failed", task=task.get_name(), exc_info=task.exception())
                status = 1
        return status

    async def _cancel(self, *names: str) -> None:
        tasks = [self.tasks.pop(name) for name in names if name in self.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Stop in the order the data flows, each step bounded in time."""
        c = self.counters
        log.info("daemon.stopping", open_connections=c.open_connections, in_data=c.in_data)
        self.systemd.send("STOPPING=1", "STATUS=draining")
        # 1. SMTP: no new connections or MAILs; transactions in DATA finish, the rest hear 421.
        c.draining = True
        for server in self.smtp_servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.smtp.drain_timeout
        while c.in_data and loop.time() < deadline:  # noqa: ASYNC110 - a counter, polled
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close_for_shutdown()
        # 2. HTTP: uvicorn finishes the requests under way.
        self.http.should_exit = True
        if "http" in self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.tasks.pop("http"), 10)
        # 3. Outbound delivery stops (a recipient under way is retried when its lease expires;
        # a local copy already made is found again by ingest's dedupe, not made twice), then the
        # accepts whose clients hung up still finish their durable write.
        await self._cancel("delivery")
        with contextlib.suppress(TimeoutError, TransientError):
            await asyncio.wait_for(release_delivery_leases(self.sessions, self.node_id), 5)
        await self.ingest.wait_idle(10)
        # Webhook POSTs under way are dropped: at least once, they are made again.
        await self._cancel("webhooks")
        with contextlib.suppress(TimeoutError, TransientError):
            await asyncio.wait_for(release_webhook_leases(self.sessions, self.node_id), 5)
        # 4. Extraction under way is dropped; its leases are given back for any node to take.
        await self._cancel("pipeline")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pipeline.release_leases(), 5)
        # 5. The rest: directory refresh, group commit, watchdog, gc, status, reloads.
        await self._cancel(*list(self.tasks))
        for task in list(self._reloads):
            task.cancel()

    async def close(self) -> None:
        """Close what `assemble` opened, the last opened first."""
        for closer in reversed(self._closers):
            done = closer()
            if done is not None:
                await done
        self._closers.clear()


async def serve(config: Config) -> int:
    """Run the daemon until SIGTERM or SIGINT; returns the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node = await Node.assemble(config)
    try:
        await node.start()
        status = await node.run_until(stop)
        await node.drain()
    finally:
        await node.close()
    log.info("daemon.stopped", status=status)
    return status
