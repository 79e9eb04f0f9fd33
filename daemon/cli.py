"""The `postroom` command line (SPEC §7): serve, check-config, health, agent …, directory …,
db upgrade, messages list|show, reprocess, gc.

Every command takes `--config` (else `POSTROOM_CONFIG`, else ./config.toml when present).
Errors print one line to stderr and exit 2 (bad usage or configuration) or 1 (a refusal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from daemon import passwords
from daemon.agents import (
    ACCEPT,
    AgentError,
    AgentInfo,
    create_agent,
    list_agents,
    remove_agent,
    rotate_key,
    set_accept,
    set_pgp_key,
)
from daemon.api import iso
from daemon.config import (
    CONFIG_ENV,
    Config,
    ConfigError,
    load_config,
    parse_duration,
    parse_listen,
)
from daemon.openpgp import GpgUnavailable, gpg_version, read_public_key
from daemon.operator import operator_list, operator_show
from daemon.ops import GcReport, RepairError, collect, configure_logging, reprocess
from daemon.outbound import DkimKeyError, Peer, add_peer, list_peers, load_key, remove_peer
from daemon.server import StartupError, build_store, prepare_database, serve
from daemon.smtp import TlsError, load_tls
from storage.db import make_engine, upgrade_schema
from storage.errors import TransientError

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _config(args: argparse.Namespace) -> Config:
    path: Path | None = args.config
    if path is None and not os.environ.get(CONFIG_ENV) and Path("config.toml").is_file():
        path = Path("config.toml")
    config = load_config(path)
    # A command's stdout is its answer; its log lines go to stderr (`serve` logs to stdout).
    configure_logging(config.log.format, config.log.level, stream=sys.stderr)
    return config


def _agent_json(info: AgentInfo, api_key: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": info.id, "name": info.name, "addresses": list(info.addresses),
                           "pgp_fingerprint": info.pgp_fingerprint}
    if api_key is not None:
        out["api_key"] = api_key
    else:
        out["key_prefix"] = info.key_prefix
        out["created_at"] = iso(info.created_at)
        out["accept"] = info.accept
    return out


async def _with_sessions(config: Config, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    engine, sessions = await prepare_database(config)
    try:
        return await fn(sessions)
    finally:
        await engine.dispose()


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    configure_logging(config.log.format, config.log.level)
    return _run(serve(config))


async def _probe_store(config: Config) -> None:
    """The configured object store answers (S3: the bucket exists and lets us in)."""
    store = await build_store(config)
    try:
        await store.check()
    finally:
        await store.close()


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.storage.backend == "s3":
        # A bucket that is missing or out of reach is a configuration error worth catching
        # before a relay gets 451s; the local store's directory is made on first start.
        _run(_probe_store(config))
    try:
        load_tls(config.smtp.tls_cert, config.smtp.tls_key)
    except TlsError as e:
        raise ConfigError(str(e)) from e
    try:
        gpg = f"{gpg_version(config.encryption.gpg)} ({config.encryption.gpg})"
    except GpgUnavailable as e:
        if config.encryption.at_rest == "required":
            raise ConfigError(f'encryption.gpg: {e} (encryption.at_rest = "required")') from e
        gpg = f"unavailable: {e}"
    for spec in config.agents:  # each declared key must be one mail can be encrypted to
        if spec.openpgp_public_key_file is not None:
            try:
                read_public_key(spec.openpgp_public_key_file, config.encryption.gpg)
            except AgentError as e:
                raise ConfigError(f"agents ({spec.name}).openpgp_public_key_file: {e}") from e
    for key in config.outbound.dkim:  # a key that cannot sign stops here, not at the first send
        try:
            load_key(key.domain, key.selector, key.key_file, key.algorithm)
        except DkimKeyError as e:
            raise ConfigError(f"outbound.dkim ({key.domain}, {key.selector}): {e}") from e
    summary = {
        "smtp": config.smtp.listen, "protocol": config.smtp.protocol,
        "http": config.http.listen, "database": config.database.url.split("://")[0],
        "storage": config.storage.backend, "agents": [a.name for a in config.agents],
        "max_message_size": config.smtp.max_message_size,
        "encryption": config.encryption.at_rest, "gpg": gpg,
    }
    if args.json:
        print(json.dumps({"ok": True, **summary}))
    else:
        print("configuration ok")
        for k, v in summary.items():
            print(f"  {k}: {v}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    config = _config(args)

    async def go() -> tuple[str | None, str | None]:
        engine = make_engine(config.database.url, config.database.busy_timeout,
                             config.database.pool_size)
        try:
            return await upgrade_schema(engine)
        finally:
            await engine.dispose()

    before, after = _run(go())
    print(f"database schema: {before or 'empty'} → {after}")
    return 0


def cmd_agent_add(args: argparse.Namespace) -> int:
    config = _config(args)
    pgp_key = read_public_key(args.pgp_key, config.encryption.gpg) if args.pgp_key else None
    info, key = _run(_with_sessions(
        config, lambda s: create_agent(s, args.name, args.address, pgp_key=pgp_key)))
    if args.json:
        print(json.dumps(_agent_json(info, key)))
    else:
        print(f"created agent {info.name} ({info.id})")
        print(f"  addresses: {', '.join(info.addresses)}")
        if info.pgp_fingerprint:
            print(f"  OpenPGP:   {info.pgp_fingerprint}")
        print(f"  API key:   {key}   (shown once)")
    return 0


def cmd_agent_set_pgp_key(args: argparse.Namespace) -> int:
    config = _config(args)
    if (args.key_file is None) == (not args.none):
        raise AgentError("give a public key FILE, or --none to remove the agent's key")
    pgp_key = read_public_key(args.key_file, config.encryption.gpg) if args.key_file else None
    info = _run(_with_sessions(config, lambda s: set_pgp_key(s, args.agent, pgp_key)))
    if args.json:
        print(json.dumps(_agent_json(info)))
    elif info.pgp_fingerprint:
        print(f"agent {info.name}: mail is now encrypted to {info.pgp_fingerprint}")
    else:
        print(f"agent {info.name}: no OpenPGP key (mail is stored as it arrives)")
    return 0


def cmd_agent_set(args: argparse.Namespace) -> int:
    config = _config(args)
    info = _run(_with_sessions(config, lambda s: set_accept(s, args.agent, args.accept)))
    if args.json:
        print(json.dumps(_agent_json(info)))
    else:
        print(f"agent {info.name}: accepts {info.accept} mail")
    return 0


def cmd_agent_list(args: argparse.Namespace) -> int:
    config = _config(args)
    agents = _run(_with_sessions(config, list_agents))
    if args.json:
        print(json.dumps([_agent_json(a) for a in agents]))
    else:
        for a in agents:
            pgp = f"  pgp {a.pgp_fingerprint}" if a.pgp_fingerprint else ""
            print(f"{a.id}  {a.name}  {', '.join(a.addresses)}  key {a.key_prefix}…{pgp}")
    return 0


def cmd_agent_remove(args: argparse.Namespace) -> int:
    config = _config(args)
    info = _run(_with_sessions(config, lambda s: remove_agent(s, args.agent)))
    print(json.dumps(_agent_json(info)) if args.json else f"removed agent {info.name} ({info.id})")
    return 0


def cmd_agent_rotate(args: argparse.Namespace) -> int:
    config = _config(args)
    info, key = _run(_with_sessions(config, lambda s: rotate_key(s, args.agent)))
    if args.json:
        print(json.dumps(_agent_json(info, key)))
    else:
        print(f"new API key for {info.name}: {key}   (shown once; the old key no longer works)")
    return 0


def _peer_json(peer: Peer) -> dict[str, Any]:
    return {"address": peer.address, "local": peer.local, "fingerprint": peer.fingerprint}


def cmd_directory_add(args: argparse.Namespace) -> int:
    config = _config(args)
    key = read_public_key(args.pgp_key, config.encryption.gpg) if args.pgp_key else None
    peer = _run(_with_sessions(config, lambda s: add_peer(s, args.address, key)))
    print(json.dumps(_peer_json(peer)) if args.json else
          f"{peer.address}: " + (f"OpenPGP {peer.fingerprint}" if peer.fingerprint else "no key"))
    return 0


def cmd_directory_list(args: argparse.Namespace) -> int:
    peers = _run(_with_sessions(_config(args), list_peers))
    if args.json:
        print(json.dumps([_peer_json(p) for p in peers]))
    for peer in [] if args.json else peers:
        print(f"{peer.address}  {peer.fingerprint or '-'}")
    return 0


def cmd_directory_remove(args: argparse.Namespace) -> int:
    _run(_with_sessions(_config(args), lambda s: remove_peer(s, args.address)))
    if not args.json:
        print(f"removed {args.address.lower()} from the directory")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Ask the daemon's /readyz: exit 0 when the database and the object store answer."""
    config = _config(args)
    url = args.url or _local_url(config.http.listen[0])
    try:
        r = httpx.get(f"{url.rstrip('/')}/readyz", timeout=args.timeout)
        body = r.json()
    except (httpx.HTTPError, ValueError) as e:
        body, status = {"status": "unreachable", "error": f"{type(e).__name__}: {e}"}, 1
    else:
        status = 0 if r.status_code == 200 else 1
    if args.json:
        print(json.dumps(body))
    else:
        checks = body.get("checks") or {}
        print(f"{body.get('status')}" + "".join(f"\n  {k}: {v}" for k, v in checks.items())
              + (f"\n  {body['error']}" if "error" in body else ""))
    return status


def cmd_mcp(args: argparse.Namespace) -> int:
    """MCP over stdio (SPEC §16): the agent whose key is POSTROOM_API_KEY, through the daemon's
    HTTP API (POSTROOM_URL, else --url, else http.listen's first address)."""
    key = os.environ.get("POSTROOM_API_KEY", "").strip()
    if not key:
        raise AgentError("set POSTROOM_API_KEY to the agent's API key")
    config = _config(args)
    url = os.environ.get("POSTROOM_URL") or args.url or _local_url(config.http.listen[0])
    from daemon.mcp import serve_stdio  # the SDK is loaded only by this command

    serve_stdio(url.rstrip("/"), key)
    return 0


def _local_url(listen: str) -> str:
    host, port = parse_listen(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def cmd_gc(args: argparse.Namespace) -> int:
    config = _config(args)
    grace: float = args.grace

    async def go() -> GcReport:
        engine, sessions = await prepare_database(config)
        store = await build_store(config)
        try:
            return await collect(store, sessions, config.retention.days, grace,
                                 orphans=not args.purge_only, dry_run=args.dry_run)
        finally:
            await store.close()
            await engine.dispose()

    report = _run(go())
    if args.json:
        print(json.dumps({"purged": len(report.purged), "messages": report.purged,
                          "scanned": report.scanned, "orphans": len(report.orphans),
                          "removed": not args.dry_run, "keys": report.orphans,
                          "too_young": report.too_young}))
    else:
        verb = "found" if args.dry_run else "removed"
        print(f"gc: {len(report.purged)} messages purged (retention {config.retention.days} "
              f"days), {report.scanned} objects scanned, {len(report.orphans)} orphans {verb}, "
              f"{report.too_young} younger than {grace:g} s left alone")
    return 0


def cmd_reprocess(args: argparse.Namespace) -> int:
    config = _config(args)
    if bool(args.message_ids) + args.failed + args.content != 1:
        raise AgentError("name message ids, or --failed, or --content")
    ids = _run(_with_sessions(config, lambda s: reprocess(s, args.message_ids, args.failed,
                                                          args.content)))
    if args.json:
        print(json.dumps({"reprocess": ids}))
    else:
        print(f"{len(ids)} messages handed back for extraction" +
              "".join(f"\n  {i}" for i in ids))
    return 0


def cmd_messages_list(args: argparse.Namespace) -> int:
    config = _config(args)
    rows = _run(_with_sessions(config, lambda s: operator_list(
        s, status=args.status, agent=args.agent, limit=args.limit)))
    if args.json:
        print(json.dumps(rows))
    else:
        for m in rows:
            print(f"{m['id']}  {m['status']:<10} {m['received_at']}  {m['size']:>9} B  "
                  f"{m['attachment_count']} att  {', '.join(m['recipients'])}")
    return 0


def cmd_messages_show(args: argparse.Namespace) -> int:
    config = _config(args)
    view = _run(_with_sessions(config, lambda s: operator_show(s, args.message_id)))
    print(json.dumps(view, indent=None if args.json else 2))
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """A line for [smtp.auth_users]: the password from stdin, or a prompt without echo."""
    return passwords.main(["hash"])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None,
                        help=f"configuration file (default: ${CONFIG_ENV} or ./config.toml)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = argparse.ArgumentParser(prog="postroom", description="Inbound mail for AI agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", parents=[common], help="run the daemon").set_defaults(fn=cmd_serve)
    sub.add_parser("check-config", parents=[common], help="validate the configuration"
                   ).set_defaults(fn=cmd_check_config)
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command",
                                                                      required=True)
    db.add_parser("upgrade", parents=[common], help="apply pending migrations"
                  ).set_defaults(fn=cmd_db_upgrade)
    sub.add_parser("hash-password", help="hash a password for smtp.auth_users (stdin or a "
                   "prompt)").set_defaults(fn=cmd_hash_password)
    health = sub.add_parser("health", parents=[common],
                            help="exit 0 when the daemon is ready (its /readyz), else 1")
    health.add_argument("--url", help="the daemon's HTTP base URL (default: from http.listen)")
    health.add_argument("--timeout", type=float, default=5.0)
    health.set_defaults(fn=cmd_health)
    mcp = sub.add_parser("mcp", parents=[common],
                         help="MCP over stdio for the agent whose key is POSTROOM_API_KEY")
    mcp.add_argument("--url", help="the daemon's HTTP base URL (default: POSTROOM_URL, "
                                   "else from http.listen)")
    mcp.set_defaults(fn=cmd_mcp)
    reproc = sub.add_parser("reprocess", parents=[common],
                            help="extract messages again from their raw objects")
    reproc.add_argument("message_ids", nargs="*", metavar="MESSAGE_ID")
    reproc.add_argument("--failed", action="store_true", help="every failed message")
    reproc.add_argument("--content", action="store_true",
                        help="every message received before text extraction existed (no "
                             "preview yet): its text, attachment text and search index")
    reproc.set_defaults(fn=cmd_reprocess)
    messages = sub.add_parser("messages", help="messages, for operators").add_subparsers(
        dest="messages_command", required=True)
    mlist = messages.add_parser("list", parents=[common], help="recent messages, newest first")
    mlist.add_argument("--status", help="only this status (received, ready, failed, …)")
    mlist.add_argument("--agent", help="only this agent's (name or id)")
    mlist.add_argument("--limit", type=int, default=50)
    mlist.set_defaults(fn=cmd_messages_list)
    mshow = messages.add_parser("show", parents=[common], help="one message: rows, no content")
    mshow.add_argument("message_id")
    mshow.set_defaults(fn=cmd_messages_show)
    gc = sub.add_parser("gc", parents=[common],
                        help="purge messages past retention.days, remove orphan objects")
    gc.add_argument("--grace", default="1h", type=_duration,
                    help="leave younger objects alone: they may belong to a delivery in flight "
                         "(default 1h)")
    gc.add_argument("--dry-run", action="store_true",
                    help="list orphans, delete nothing (and purge nothing)")
    gc.add_argument("--purge-only", action="store_true", help="skip the orphan sweep")
    gc.set_defaults(fn=cmd_gc)
    agent = sub.add_parser("agent", help="manage agents").add_subparsers(dest="agent_command",
                                                                          required=True)
    add = agent.add_parser("add", parents=[common], help="create an agent and print its key")
    add.add_argument("name")
    add.add_argument("--address", action="append", required=True,
                     help="an address it owns (repeatable; *@domain is a catch-all)")
    add.add_argument("--pgp-key", type=Path, metavar="FILE",
                     help="its armored OpenPGP public key: mail to it is stored encrypted")
    add.set_defaults(fn=cmd_agent_add)
    pgp = agent.add_parser("set-pgp-key", parents=[common],
                           help="set (or with --none remove) an agent's OpenPGP public key")
    pgp.add_argument("agent", help="name or id")
    pgp.add_argument("key_file", type=Path, nargs="?", metavar="FILE")
    pgp.add_argument("--none", action="store_true", help="remove the key")
    pgp.set_defaults(fn=cmd_agent_set_pgp_key)
    aset = agent.add_parser("set", parents=[common], help="change an agent's settings")
    aset.add_argument("agent", help="name or id")
    aset.add_argument("--accept", choices=ACCEPT, required=True,
                      help="authenticated: quarantine inbound mail whose sender verdict "
                           "is not pass")
    aset.set_defaults(fn=cmd_agent_set)
    agent.add_parser("list", parents=[common], help="list agents").set_defaults(fn=cmd_agent_list)
    rm = agent.add_parser("remove", parents=[common], help="delete an agent")
    rm.add_argument("agent", help="name or id")
    rm.set_defaults(fn=cmd_agent_remove)
    rot = agent.add_parser("rotate-key", parents=[common], help="issue a new API key")
    rot.add_argument("agent", help="name or id")
    rot.set_defaults(fn=cmd_agent_rotate)
    peers = sub.add_parser("directory", help="external addresses and their OpenPGP keys"
                           ).add_subparsers(dest="directory_command", required=True)
    padd = peers.add_parser("add", parents=[common], help="register an external address")
    padd.add_argument("address")
    padd.add_argument("--pgp-key", type=Path, metavar="FILE",
                      help="its armored OpenPGP public key (what agents encrypt to)")
    padd.set_defaults(fn=cmd_directory_add)
    peers.add_parser("list", parents=[common], help="registered addresses"
                     ).set_defaults(fn=cmd_directory_list)
    prm = peers.add_parser("remove", parents=[common], help="forget an external address")
    prm.add_argument("address")
    prm.set_defaults(fn=cmd_directory_remove)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `postroom` console script."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.fn(args)
        return status
    except (ConfigError, StartupError) as e:  # the operator must change something: exit 2
        print(f"postroom: {e}", file=sys.stderr)
        return 2
    except (AgentError, RepairError, TransientError) as e:  # a refusal or an outage: exit 1
        print(f"postroom: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
