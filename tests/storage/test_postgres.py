"""postroom on the machine's PostgreSQL: the schema is the operator's to upgrade, a server restart
under load costs 451s and nothing else, locks and the pool are bounded by timeouts (451 and 503,
never a hang), and addresses fit their columns. Every test has a fresh database."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from storage.db import head_revision
from tests.harness import queued_id, running_daemon, write_config
from tests.mail import plain, with_attachment
from tests.pgserver import PgServer, restart_cluster


def _section(url: str, more: str = "") -> str:
    return f'[database]\nurl = "{url}"\n{more}'


def _public_tables(pg: PgServer, url: str) -> list[str]:
    return sorted(r[0] for r in pg.fetch(
        url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))


def test_a_node_never_migrates_postgresql_itself(pg: PgServer, tmp_path: Path) -> None:
    url = pg.new_database(upgraded=False)
    cfg = write_config(tmp_path, extra=_section(url))
    serve = [sys.executable, "-m", "daemon", "serve", "--config", str(cfg)]
    refused = subprocess.run(serve, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr  # refused: the operator must act
    assert _public_tables(pg, url) == []  # it looked, and changed nothing

    # Two operators (or two nodes' deploy scripts) upgrading at once take turns.
    upgrade = [sys.executable, "-m", "daemon", "db", "upgrade", "--config", str(cfg)]
    both = [subprocess.Popen(upgrade, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=tmp_path) for _ in range(2)]
    outcomes = [(*p.communicate(timeout=120), p.returncode) for p in both]
    assert [rc for _, _, rc in outcomes] == [0, 0], outcomes
    assert all(f"→ {head_revision()}" in out for out, _, _ in outcomes)
    assert [r[0] for r in pg.fetch(url, "SELECT version_num FROM alembic_version")] == [
        head_revision()]
    assert {"messages", "attachments", "events", "agents"} <= set(_public_tables(pg, url))

    # Once upgraded the same database serves: what was refused was its schema.
    with running_daemon(tmp_path, extra=_section(url)) as d:
        agent = d.add_agent("hal", "hal@agents.test")
        sent = d.send(with_attachment("hal@agents.test", b"pg"), ["hal@agents.test"])
        assert d.wait_message(agent["api_key"], sent)["status"] == "ready"


@pytest.mark.serial  # restarts the whole cluster: no other test may use it meanwhile
def test_postgresql_restarting_under_load_costs_451s_then_service_resumes(
        pg: PgServer, tmp_path: Path) -> None:
    url = pg.new_database()
    with running_daemon(tmp_path, extra=_section(url)) as d:
        agent = d.add_agent("ivy", "ivy@agents.test")
        replies: list[tuple[int, str]] = []
        stop = threading.Event()

        def sender() -> None:
            while not stop.is_set():
                code, text = d.try_send(plain("ivy@agents.test").as_bytes(), "ivy@agents.test")
                replies.append((code, text.decode(errors="replace")))

        threads = [threading.Thread(target=sender) for _ in range(4)]
        for t in threads:
            t.start()
        d.wait_for(lambda: len(replies) >= 20, 30, "load before the restart")
        restart_cluster()
        during = len(replies)
        # The load goes on through the server's return: a few more deliveries from each sender.
        d.wait_for(lambda: len(replies) >= during + 3 * len(threads), 60, "load after the restart")
        stop.set()
        for t in threads:
            t.join(90)
            assert not t.is_alive(), "a delivery hung"
        codes = [code for code, _ in replies]
        assert set(codes) <= {250, 451}, sorted(set(codes))
        # Service is back without a restart of postroom.
        after = d.send(with_attachment("ivy@agents.test", b"after"), ["ivy@agents.test"])
        assert d.wait_message(agent["api_key"], after)["status"] == "ready"
        for code, text in replies:
            if code == 250:
                assert d.wait_message(agent["api_key"], queued_id(text))["status"] == "ready"
        print(f"\nPostgreSQL restart: {len(replies)} deliveries, {codes.count(451)} × 451, "
              f"{codes.count(250)} × 250 ({during} before the restart returned)")


@contextlib.contextmanager
def locked_tables(pg: PgServer, url: str, *tables: str) -> Iterator[None]:
    """Hold ACCESS EXCLUSIVE locks on `tables` from another session while the block runs."""
    locked, release = threading.Event(), threading.Event()

    async def hold() -> None:
        conn = await pg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
                locked.set()
                await asyncio.to_thread(release.wait, 60)
        finally:
            await conn.close()

    holder = threading.Thread(target=lambda: asyncio.run(hold()))
    holder.start()
    assert locked.wait(10), "could not take the locks"
    try:
        yield
    finally:
        release.set()
        holder.join(10)


def test_a_locked_database_and_an_exhausted_pool_answer_451_and_503_never_hang(
        pg: PgServer, tmp_path: Path) -> None:
    url = pg.new_database()
    with running_daemon(tmp_path, extra=_section(url, 'pool_size = 2\nbusy_timeout = "1s"\n')
                        ) as d:
        agent = d.add_agent("jo", "jo@agents.test")
        replies: list[int] = []
        statuses: list[tuple[int, str | None]] = []
        # Every reply within 20 s: the clients give up after that, and the reply is missing.

        def deliver() -> None:
            code, _ = d.try_send(plain("jo@agents.test").as_bytes(), "jo@agents.test", timeout=20)
            replies.append(code)

        def read() -> None:
            with d.api(agent["api_key"], timeout=20) as api:
                r = api.get("/v1/messages")
            statuses.append((r.status_code, r.json().get("error", {}).get("code")))

        with locked_tables(pg, url, "messages", "events", "recipients"):
            # Twelve API reads each hold one of two pooled connections while they wait on the
            # lock, so most never get a connection at all; eight deliveries wait on the lock.
            threads = [threading.Thread(target=read) for _ in range(12)] + [
                threading.Thread(target=deliver) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
                assert not t.is_alive(), "a request hung"
            # The server itself answers: readiness is about reaching it, not about one lock.
            ready = httpx.get(f"{d.url}/readyz", timeout=30)
        assert replies == [451] * 8, replies
        assert statuses == [(503, "unavailable")] * 12, statuses
        assert ready.status_code == 200, ready.text
        # The locks gone, everything works again.
        sent = d.send(with_attachment("jo@agents.test", b"later"), ["jo@agents.test"])
        assert d.wait_message(agent["api_key"], sent)["status"] == "ready"


def test_addresses_up_to_smtps_limit_fit_and_longer_ones_are_refused(
        pg: PgServer, tmp_path: Path) -> None:
    with running_daemon(tmp_path, extra=_section(pg.new_database())) as d:
        agent = d.add_agent("kit", "*@kit.test")
        longest = "k+" + "t" * (254 - len("k+@kit.test")) + "@kit.test"
        assert len(longest) == 254
        sent = d.send(plain(longest), [longest])
        view = d.wait_message(agent["api_key"], sent)
        assert view["status"] == "ready" and view["recipients"] == [longest]
        assert view["tag"] == "t" * (254 - len("k+@kit.test"))
        assert d.rcpt_code("k" + longest) == 501


def test_readyz_and_health_fail_while_the_database_refuses_connections(
        pg: PgServer, tmp_path: Path) -> None:
    url = pg.new_database()
    name = url.rsplit("/", 1)[1]
    admin = pg.dsn("postgres")
    with running_daemon(tmp_path, extra=_section(url, 'busy_timeout = "2s"\n')) as d:
        assert httpx.get(f"{d.url}/readyz", timeout=30).status_code == 200
        # The database stops answering this daemon: no new connections, the old ones cut.
        pg.fetch(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        pg.fetch(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE datname = $1", name)
        try:
            r = httpx.get(f"{d.url}/readyz", timeout=30)
            assert r.status_code == 503, r.text
            assert r.json()["checks"]["database"] != "ok"
            assert r.json()["checks"]["storage"] == "ok"
            assert d.cli("health", check=False).returncode == 1
        finally:
            pg.fetch(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        d.wait_for(lambda: httpx.get(f"{d.url}/readyz", timeout=30).status_code == 200, 20,
                   "readiness back")
        assert d.cli("health", check=False).returncode == 0
