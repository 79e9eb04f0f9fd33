"""The daemon as one coroutine: SMTP, HTTP, extraction workers and the directory in one loop.

`serve()` starts everything, announces the bound addresses, and on SIGTERM/SIGINT drains: it
stops accepting, lets transactions already in DATA finish under a deadline, answers 421 to the
rest, and leaves unfinished extraction to the leases. This module is the one place that owns
signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Generator

import structlog
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.agents import AgentError, create_agent, find_agent, set_pgp_key
from daemon.api import ApiContext, BodyLimit, Lookups, create_app, streamed_routes
from daemon.config import Config, parse_listen, unsupported
from daemon.directory import Directory
from daemon.events import Wakeups
from daemon.openpgp import OpenPgp, read_public_key
from daemon.ops import Errors, Metrics, Sources, SystemdNotifier, run_periodically
from daemon.passwords import AuthUsers
from daemon.pipeline import ExtractionPool, Ingest, Pipeline, PipelineSettings, release_all_leases
from daemon.smtp import (
    COMMAND_CALL_LIMITS,
    PostroomHandler,
    PostroomLMTP,
    PostroomSMTP,
    SmtpCounters,
    TlsError,
    load_tls,
    parse_networks,
)
from extractors import Limits
from storage.db import (
    current_revision,
    head_revision,
    make_engine,
    make_sessions,
    migrate_in_child,
)
from storage.errors import TransientError
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


def check_supported(config: Config) -> None:
    """Refuse settings this version would otherwise silently ignore."""
    missing = unsupported(config)
    if missing:
        raise StartupError("not available in this version: " + ", ".join(missing))


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
    engine = make_engine(config.database.url, config.database.busy_timeout,
                         config.database.pool_size)
    if config.is_sqlite:
        if await current_revision(engine) != head_revision():
            status, said = await migrate_in_child(config.database.url,
                                                  config.database.busy_timeout)
            if status != 0 or await current_revision(engine) != head_revision():
                await engine.dispose()
                raise StartupError(f"database schema upgrade failed: {said.strip()[-400:]}")
    else:
        current, head = await current_revision(engine), head_revision()
        if current != head:
            await engine.dispose()
            raise StartupError(f"database schema is at {current}, this version needs {head}: "
                               "run `postroom db upgrade`")
    return engine, make_sessions(engine)


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
            continue
        key = config.agent_keys.get(spec.api_key_env) if spec.api_key_env else None
        try:
            info, api_key = await create_agent(sessions, spec.name, spec.addresses,
                                               api_key=key, pgp_key=pgp_key)
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


async def serve(config: Config) -> int:
    """Run the daemon until SIGTERM or SIGINT; returns the exit status."""
    check_supported(config)
    try:  # a bad certificate or key stops the start before anything is opened
        tls = load_tls(config.smtp.tls_cert, config.smtp.tls_key)
    except TlsError as e:
        raise StartupError(str(e)) from e
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    systemd = SystemdNotifier()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    reload_hooks: list[Callable[[], None]] = []  # SIGHUP: things that re-read their files
    if tls is not None:
        reload_hooks.append(tls.reload)  # a bad file keeps the old context (TlsError logged)
    engine, sessions = await prepare_database(config)
    store = await build_store(config)
    try:
        await store.check()
    except TransientError as e:
        # Not fatal: SMTP answers 451 and /readyz says why until the store answers.
        log.warning("storage.unavailable", error=str(e))
    await ensure_config_agents(config, sessions)
    if config.is_sqlite:
        await release_all_leases(sessions)

    node_id = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    directory = Directory(sessions, config.pipeline.directory_refresh)
    await directory.reload()
    pgp = OpenPgp(config.encryption, sessions, directory)
    await pgp.start()
    notifier = Wakeups()  # a message's state changed (GET …?wait=)
    events = Wakeups()  # events were committed (GET /v1/events?wait=)
    stale = clear_stale(store.spool_dir)  # before any worker process writes there
    if stale:
        log.info("daemon.spool_cleared", files=stale)
    extraction = ExtractionPool(config.pipeline.extract_processes)
    await extraction.start()
    p = config.pipeline
    writer = GroupCommit(engine, busy_timeout=config.database.busy_timeout)
    counters = SmtpCounters()
    metrics = Metrics(Sources(
        smtp=counters, queue_depth=lambda: pipeline.depth, busy_workers=lambda: pipeline.busy,
        commits=lambda: (writer.batches, writer.writes, writer.failures), errors=Errors()),
        sessions)
    pipeline = Pipeline(
        PipelineSettings(p.workers, p.queue_size, p.lease, p.sweep_interval, p.max_attempts,
                         Limits(config.limits.max_attachment_size, config.limits.max_parts,
                                config.limits.max_depth), p.transient_retry_for, p.max_lag),
        sessions, writer, store, extraction, node_id, notifier, events, pgp, metrics,
        incoming=lambda: counters.in_data)
    spooler = Spooler(store.spool_dir, config.smtp.spool_threshold)
    ingest = Ingest(sessions, writer, store, spooler, config.smtp.hostname, p.dedupe_window,
                    jobs=pipeline, events=events, pgp=pgp, extract=pipeline.extract)
    handler = PostroomHandler(directory, ingest, config.smtp.max_message_size,
                              config.smtp.max_recipients,
                              "LMTP" if config.smtp.protocol == "lmtp" else "ESMTP", counters,
                              at_rest=config.encryption.at_rest)
    networks = parse_networks(config.smtp.trusted_networks)
    connections: set[PostroomSMTP] = set()

    users = AuthUsers(config.smtp.auth_users) if config.smtp.auth_users else None
    protocol = PostroomLMTP if config.smtp.protocol == "lmtp" else PostroomSMTP
    proxy_timeout = config.smtp.proxy_protocol_timeout if config.smtp.proxy_protocol else None

    def smtp_factory() -> PostroomSMTP:
        proto = protocol(handler, counters, networks, config.smtp.max_connections,
                         connections=connections, tls=tls, users=users,
                         require_tls=config.smtp.require_tls, proxy_timeout=proxy_timeout,
                         hostname=config.smtp.hostname,
                         timeout=config.smtp.timeout, enable_SMTPUTF8=True,
                         data_size_limit=None, ident=f"postroom {handler.protocol_name}",
                         command_call_limit=dict(COMMAND_CALL_LIMITS), loop=loop)
        return proto

    smtp_socks = [_bind(listen) for listen in config.smtp.listen]
    http_socks = [_bind(listen) for listen in config.http.listen]
    # create_server listens again, with its own default of 100 unless told: a burst of relays
    # connecting at once would then see dropped SYNs and a second's retransmit delay.
    smtp_servers = [await loop.create_server(smtp_factory, sock=s, backlog=LISTEN_BACKLOG)
                    for s in smtp_socks]
    lookups = Lookups(engine)
    app = create_app(ApiContext(sessions, store, notifier, config.storage.presign_ttl,
                                config.http.max_wait, lookups=lookups,
                                upload_max_bytes=config.uploads.max_bytes, events=events,
                                metrics=metrics))
    bounded = BodyLimit(app, config.http.max_body, streamed_routes(config.uploads.max_bytes))
    http = _QuietServer(uvicorn.Config(bounded, log_level="warning",
                                       access_log=False, lifespan="off",
                                       timeout_graceful_shutdown=5, server_header=False))
    tasks = [
        asyncio.create_task(http.serve(sockets=http_socks), name="http"),
        asyncio.create_task(pipeline.run(), name="pipeline"),
        asyncio.create_task(directory.run(), name="directory"),
        asyncio.create_task(writer.run(), name="group-commit"),
    ]
    if systemd.watchdog_interval is not None:
        tasks.append(asyncio.create_task(systemd.watchdog(), name="watchdog"))
    if config.retention.days > 0:
        tasks.append(asyncio.create_task(
            run_periodically(store, sessions, config.retention.days,
                             every=config.retention.interval), name="gc"))

    def describe() -> str:
        sent = sum(counters.transactions.values())
        return (f"{counters.open_connections} connections, {sent} transactions "
                f"({counters.transactions.get('250', 0)} accepted), queue {pipeline.depth}, "
                f"extracting {pipeline.busy}")

    if systemd.enabled:  # every task here runs until the end: one that returns stops serve()
        tasks.append(asyncio.create_task(systemd.status(describe), name="status"))

    async def reload() -> None:
        """SIGHUP: re-read agents (and, with TLS, the certificate files) without dropping a
        connection; systemd sees RELOADING=1 … READY=1 around it."""
        systemd.reloading()
        log.info("daemon.reloading")
        try:
            await directory.reload()
            for hook in reload_hooks:
                await asyncio.to_thread(hook)
        except Exception as e:  # a bad file: keep serving with what was loaded before
            log.error("daemon.reload_failed", error=str(e))
        else:
            log.info("daemon.reloaded", agents=len(set(directory.fingerprints) |
                                                   set(directory.agent_ids())))
        systemd.send("READY=1", f"STATUS={describe()}")

    reloads: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        task = asyncio.create_task(reload(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    while not http.started and not tasks[0].done():  # noqa: ASYNC110 - uvicorn offers no event
        await asyncio.sleep(0.01)
    log.info("daemon.ready", smtp=[_addr(s) for s in smtp_socks],
             http=[_addr(s) for s in http_socks], node=node_id,
             database="sqlite" if config.is_sqlite else "postgresql",
             storage=config.storage.backend)
    systemd.send("READY=1", f"STATUS=accepting mail on {', '.join(_addr(s) for s in smtp_socks)}")

    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    status = 0
    for task in done:
        if task is not stopper and task.exception() is not None:
            log.error("daemon.task_failed", task=task.get_name(), exc_info=task.exception())
            status = 1
    log.info("daemon.stopping", open_connections=counters.open_connections,
             in_data=counters.in_data)
    systemd.send("STOPPING=1", "STATUS=draining")
    counters.draining = True
    for srv in smtp_servers:
        srv.close()
    deadline = loop.time() + config.smtp.drain_timeout
    while counters.in_data and loop.time() < deadline:  # noqa: ASYNC110 - a counter, polled
        await asyncio.sleep(0.05)
    for conn in list(connections):
        conn.close_for_shutdown()
    http.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(tasks[0], 10)
    await ingest.wait_idle(10)  # accepts whose clients hung up still finish their durable write
    tasks[1].cancel()  # the pipeline: extraction under way is dropped, its leases given back
    await asyncio.gather(tasks[1], return_exceptions=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pipeline.release_leases(), 5)
    for task in tasks[2:]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    extraction.close()
    spooler.close()
    await store.close()
    lookups.close()
    writer.close()
    await engine.dispose()
    log.info("daemon.stopped", status=status)
    return status
