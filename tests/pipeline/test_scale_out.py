"""Scale-out (SPEC §10): identical nodes on one PostgreSQL database and one bucket (moto).

Every node is a real `postroom serve`; the database is a fresh one on the machine's PostgreSQL.
The load test kills one node with SIGKILL while mail flows to all three and checks afterwards,
in the database and in the bucket, that every message that got a 250 is ready exactly once,
including those the dead node had accepted and not yet extracted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import smtplib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from storage.objects import attachment_key, body_key, raw_key
from tests.harness import Daemon, queued_id, start_daemon, write_config
from tests.mail import with_attachment
from tests.pgserver import PgServer
from tests.s3server import MotoServer

PREFIX = "mail/"


def _config(root: Path, url: str, s3: MotoServer, bucket: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return write_config(root, extra=(
        f'[database]\nurl = "{url}"\n'
        f'[storage]\nbackend = "s3"\nbucket = "{bucket}"\nprefix = "{PREFIX}"\n'
        f'endpoint_url = "{s3.endpoint_url}"\nregion = "us-east-1"\n'))


@dataclass
class Cluster:
    nodes: list[Daemon]
    url: str
    bucket: str
    node_ids: list[str] = field(default_factory=list)

    def live(self) -> list[Daemon]:
        return [n for n in self.nodes if n.proc.poll() is None]


@contextlib.contextmanager
def cluster(root: Path, pg: PgServer, s3: MotoServer, count: int) -> Iterator[Cluster]:
    url, bucket = pg.new_database(), s3.new_bucket()
    nodes: list[Daemon] = []
    try:
        for i in range(count):
            node_root = root / f"node{i}"
            nodes.append(start_daemon(node_root, _config(node_root, url, s3, bucket)))
        ids = [next(e for e in n.logs if e.get("event") == "daemon.ready")["node"]
               for n in nodes]
        yield Cluster(nodes, url, bucket, ids)
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                assert n.stop() == 0, "\n".join(n.stderr[-30:])
            else:
                n.close_pipes()


def _until(predicate: Any, within: float, what: str) -> float:
    """Seconds until `predicate()` held; fails after `within`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(0.05)
    return time.monotonic() - start


def test_agent_changes_reach_every_node_within_5s(pg: PgServer, s3_server: MotoServer,
                                                  tmp_path: Path) -> None:
    with cluster(tmp_path, pg, s3_server, 2) as c:
        a, b = c.nodes
        # RCPT probes come from a fresh address each time, so no node answers from a cache of
        # its own earlier miss.
        agent = a.add_agent("erin", "erin@agents.test")  # waits for node a
        took = {"rcpt": _until(lambda: b.rcpt_code("erin@agents.test") == 250, 5.0,
                               "the new agent's address on node b")}

        def status(node: Daemon, key: str) -> int:
            with node.api(key) as api:
                return int(api.get("/v1/messages").status_code)

        took["key"] = _until(lambda: status(b, agent["api_key"]) == 200, 5.0, "its key on b")
        rotated = b.cli("agent", "rotate-key", "erin", "--json")
        new_key = json.loads(rotated.stdout)["api_key"]
        took["rotate"] = _until(lambda: all(status(n, agent["api_key"]) == 401 and
                                            status(n, new_key) == 200 for n in c.nodes),
                                5.0, "the rotated key on every node")
        a.cli("agent", "remove", "erin")
        took["remove"] = _until(
            lambda: all(n.rcpt_code("erin@agents.test") == 550 and status(n, new_key) == 401
                        for n in c.nodes), 5.0, "the removal on every node")
        print(f"\nagent changes seen by every node after (s): "
              f"{ {k: round(v, 2) for k, v in took.items()} }")


def test_a_redelivery_is_deduplicated_across_nodes(pg: PgServer, s3_server: MotoServer,
                                                   tmp_path: Path) -> None:
    with cluster(tmp_path, pg, s3_server, 3) as c:
        agent = c.nodes[0].add_agent("fay", "fay@agents.test")
        for n in c.nodes:
            n.wait_for(lambda n=n: n.rcpt_code("fay@agents.test") == 250, 5.0, "fay's RCPT")
        # The same bytes to the same recipient through every node at once (a relay retrying
        # on another MX while the first attempt is still in flight), then once more later.
        data = with_attachment("fay@agents.test", os.urandom(50_000)).as_bytes()
        replies: list[tuple[int, bytes]] = []
        barrier = threading.Barrier(3)

        def deliver(node: Daemon) -> None:
            with node.smtp() as s:
                s.ehlo("relay.example")
                s.mail("s@example.org")
                s.rcpt("fay@agents.test")
                barrier.wait()
                replies.append(s.data(data))

        threads = [threading.Thread(target=deliver, args=(n,)) for n in c.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [code for code, _ in replies] == [250, 250, 250], replies
        ids = {queued_id(text) for _, text in replies}
        assert len(ids) == 1, replies
        (message_id,) = ids
        assert c.nodes[2].send(data, ["fay@agents.test"]) == message_id
        assert c.nodes[0].wait_message(agent["api_key"], message_id)["status"] == "ready"
        rows = pg.fetch(c.url, "SELECT id FROM messages")
        assert [r[0] for r in rows] == [message_id]
        keys = _bucket_keys(s3_server, c.bucket)
        assert sorted(k for k in keys if k.startswith("raw/")) == [raw_key(message_id)]


def _bucket_keys(s3: MotoServer, bucket: str) -> set[str]:
    client = s3.client()
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
        keys |= {o["Key"][len(PREFIX):] for o in page.get("Contents", [])}
    return keys


@dataclass
class Sent:
    """One distinct message of the load and what postroom must end up with for it."""

    data: bytes
    sha256s: list[str]
    message_id: str | None = None
    node: int | None = None
    tries: list[str] = field(default_factory=list)


def _messages(count: int, rng: random.Random) -> list[Sent]:
    out = []
    for i in range(count):
        payloads = [os.urandom(rng.choice((2_000, 40_000, 300_000))) for _ in range(
            rng.randint(1, 3))]
        msg = with_attachment("gus@agents.test", payloads[0], file_name=f"a{i}-0.bin",
                              content_type="application/octet-stream", subject=f"load {i}")
        for j, extra in enumerate(payloads[1:], 1):
            msg.add_attachment(extra, maintype="application", subtype="octet-stream",
                               filename=f"a{i}-{j}.bin")
        out.append(Sent(msg.as_bytes(), [hashlib.sha256(p).hexdigest() for p in payloads]))
    return out


def test_three_nodes_one_killed_mid_load_lose_and_duplicate_nothing(
        pg: PgServer, s3_server: MotoServer, tmp_path: Path) -> None:
    rng = random.Random(6)
    load = _messages(150, rng)
    with cluster(tmp_path, pg, s3_server, 3) as c:
        agent = c.nodes[0].add_agent("gus", "gus@agents.test")
        for n in c.nodes:
            n.wait_for(lambda n=n: n.rcpt_code("gus@agents.test") == 250, 5.0, "gus's RCPT")
        victim = 1
        killed = threading.Event()
        next_index = iter(range(len(load)))
        lock = threading.Lock()

        def sender(worker: int) -> None:
            """A relay's delivery agent: each message to a node in turn; when a node fails
            (refused, cut off, 4xx), the same bytes again to the next node, as to another MX."""
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                sent = load[i]
                for attempt in range(12):
                    node = (i + attempt) % 3
                    if node == victim and killed.is_set():
                        continue
                    d = c.nodes[node]
                    try:
                        with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=60) as s:
                            s.ehlo("relay.example")
                            s.mail("s@example.org")
                            s.rcpt("gus@agents.test")
                            code, text = s.data(sent.data)
                    except (OSError, smtplib.SMTPException) as e:
                        sent.tries.append(f"node{node}: {type(e).__name__}")
                        continue
                    sent.tries.append(f"node{node}: {code}")
                    if code == 250:
                        sent.message_id, sent.node = queued_id(text), node
                        break
                    assert 400 <= code < 500, (code, text)  # never a 5xx for our failure
                    time.sleep(0.2)

        threads = [threading.Thread(target=sender, args=(w,)) for w in range(12)]
        started = time.monotonic()
        for t in threads:
            t.start()
        # Kill the victim once a third of the load is in and it holds leases on messages it
        # accepted but has not finished: the work another node must take over.
        victim_id = c.node_ids[victim]

        def held_by_victim() -> list[str]:
            return [r[0] for r in pg.fetch(
                c.url, "SELECT id FROM messages WHERE lease_owner = $1 AND status IN "
                "('received', 'processing')", victim_id)]

        def ripe() -> bool:
            done = sum(1 for s in load if s.message_id)
            return done >= len(load) // 3 and len(held_by_victim()) >= 2

        _until(ripe, 60.0, "the victim holding unfinished work a third of the way in")
        c.nodes[victim].proc.send_signal(signal.SIGKILL)
        c.nodes[victim].proc.wait(10)
        killed.set()
        orphaned = held_by_victim()  # nothing can change them now but another node
        for t in threads:
            t.join(180)
        load_seconds = time.monotonic() - started

        unacknowledged = [s.tries for s in load if s.message_id is None]
        assert not unacknowledged, unacknowledged[:5]
        assert orphaned, "the victim held no unfinished work when killed"
        survivor = c.nodes[0]
        key = agent["api_key"]
        finished_at = time.monotonic()
        with survivor.api(key) as api:
            for sent in load:
                view = _until_ready(api, str(sent.message_id))
                assert view["status"] == "ready", view
                assert [a["sha256"] for a in view["attachments"]] == sent.sha256s
                assert all(a["status"] == "ready" for a in view["attachments"])
        settle = time.monotonic() - finished_at

        # Exactly once, in the database: one row per distinct message, its attachments once,
        # one message.received and one message.ready event each.
        ids = {s.message_id for s in load}
        assert len(ids) == len(load)
        rows = pg.fetch(c.url, "SELECT id, status, attempts, lease_owner FROM messages")
        assert sorted(r[0] for r in rows) == sorted(ids)
        assert {r[1] for r in rows} == {"ready"} and {r[3] for r in rows} == {None}
        by_id = {r[0]: r for r in rows}
        assert all(by_id[m][2] >= 2 for m in orphaned), [by_id[m] for m in orphaned]
        counts = dict(pg.fetch(c.url, "SELECT message_id, count(*) FROM attachments "
                               "GROUP BY message_id"))
        assert counts == {s.message_id: len(s.sha256s) for s in load}
        events = pg.fetch(c.url, "SELECT message_id, type, count(*) FROM events "
                          "WHERE type IN ('message.received', 'message.ready') "
                          "GROUP BY message_id, type")
        assert len(events) == 2 * len(load) and {e[2] for e in events} == {1}, events

        # And in the bucket: every object of every message, and nothing else but the raw
        # bytes of transactions the victim never answered (their rows never committed; the
        # relay delivered them again elsewhere), which `postroom gc` then removes.
        keys = _bucket_keys(s3_server, c.bucket)
        expected = {raw_key(m) for m in ids} | {body_key(m, "text") for m in ids} | {
            attachment_key(s.message_id, i) for s in load if s.message_id
            for i in range(len(s.sha256s))}
        assert expected <= keys, sorted(expected - keys)[:5]
        strays = keys - expected
        assert all(k.startswith("raw/") for k in strays), sorted(strays)
        assert len(strays) <= len(threads), sorted(strays)
        cautious = json.loads(survivor.cli("gc", "--json").stdout)  # default grace: 1 hour
        assert cautious["orphans"] == 0 and cautious["too_young"] == len(strays)
        swept = json.loads(survivor.cli("gc", "--grace", "0s", "--json").stdout)
        assert sorted(swept["keys"]) == sorted(strays)
        assert _bucket_keys(s3_server, c.bucket) == expected
        print(f"\nscale-out: {len(load)} messages through 3 nodes in {load_seconds:.1f} s, "
              f"node {victim} killed holding {len(orphaned)} unfinished; all ready "
              f"{settle:.1f} s after the load; "
              f"{sum(len(s.tries) - 1 for s in load)} relay retries; "
              f"{len(strays)} raw objects of unanswered transactions, removed by gc")


def _until_ready(api: httpx.Client, message_id: str, within: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        r = api.get(f"/v1/messages/{message_id}")
        assert r.status_code == 200, r.text
        view: dict[str, Any] = r.json()
        if view["status"] not in ("received", "processing") or time.monotonic() > deadline:
            return view
        time.sleep(0.1)


def test_a_node_stopped_with_sigterm_gives_its_leases_back_at_once(
        pg: PgServer, s3_server: MotoServer, tmp_path: Path) -> None:
    """With 60 s leases, a node that drains and exits with work queued hands it over at once:
    the other node finishes it long before the leases could have expired."""
    url, bucket = pg.new_database(), s3_server.new_bucket()
    nodes = []
    try:
        for i in range(2):
            root = tmp_path / f"node{i}"
            config = _config(root, url, s3_server, bucket)
            config.write_text(config.read_text().replace(
                'lease = "3s"', 'lease = "60s"\nworkers = 1'))
            nodes.append(start_daemon(root, config))
        a, b = nodes
        agent = a.add_agent("ned", "ned@agents.test")
        ids = []
        with a.smtp() as s:  # one connection, many messages: quick to hand over
            s.ehlo("relay.example")
            for size in (300_000, 300_000, 30_000_000):  # the last one keeps a busy
                s.mail("s@example.org")
                s.rcpt("ned@agents.test")
                code, text = s.data(with_attachment("ned@agents.test", os.urandom(size),
                                                    subject=f"drain {size}").as_bytes())
                assert code == 250
                ids.append(queued_id(text))
        stopped = time.monotonic()
        # Everything ready within 40 s of the stop: not the 60 s a dead node's leases would take.
        deadline = stopped + 40
        assert a.stop() == 0
        released = a.events("pipeline.leases_released")
        assert released and released[0]["messages"] >= 1, "a finished everything first"
        with b.api(agent["api_key"]) as api:
            for message_id in ids:
                view = _until_ready(api, message_id, max(0.0, deadline - time.monotonic()))
                assert view["status"] == "ready", view
        took = time.monotonic() - stopped  # for the report only
        print(f"\ndrain: node a released {released[0]['messages'] if released else 0} leases; "
              f"node b finished everything {took:.1f} s after a stopped")
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                n.stop()
            else:
                n.close_pipes()
