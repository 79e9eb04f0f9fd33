"""Operations through the real daemon (SPEC §7, §9): /metrics, `postroom health`, systemd's
notify protocol around SIGHUP and SIGTERM, retention (`gc`), `reprocess`, `messages list|show`,
and logs that are JSON and carry no secrets or content."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Daemon, running_daemon
from tests.mail import plain, with_attachment
from tests.s3server import MotoServer, start_moto_server

MARKER = "CONTENT-MARKER-7d1f"


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("postroom-ops"),
                        extra="[retention]\ndays = 1\n") as d:
        yield d


@pytest.fixture(scope="module")
def kim(ops: Daemon) -> dict[str, Any]:
    return ops.add_agent("kim", "kim@agents.test")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_what_happened_without_naming_anyone(ops: Daemon,
                                                           kim: dict[str, Any]) -> None:
    ids = [ops.send(with_attachment("kim@agents.test", os.urandom(2000), text=MARKER),
                    ["kim@agents.test"]) for _ in range(3)]
    for message_id in ids:
        ops.wait_message(kim["api_key"], message_id)
    assert ops.rcpt_code("nobody@agents.test") == 550

    def scraped() -> dict[Any, float] | None:
        r = httpx.get(f"{ops.url}/metrics", timeout=10)  # no key needed
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert "kim@agents.test" not in r.text and MARKER not in r.text
        samples = _samples(r.text)
        if samples.get(("postroom_messages", (("status", "ready"),)), 0) < 3:
            return None
        return samples

    samples = ops.wait_for(scraped, 15, "the status counts")
    assert samples[("postroom_smtp_transactions_total", (("code", "250"),))] >= 3
    assert samples[("postroom_smtp_received_bytes_total", ())] > 6000
    assert samples[("postroom_smtp_connections_open", ())] >= 0
    assert samples[("postroom_extraction_seconds_count", ())] >= 3
    assert samples[("postroom_attachments", (("status", "ready"),))] >= 3
    for name in ("postroom_pipeline_queue_depth", "postroom_pipeline_busy_workers",
                 "postroom_unfinished_oldest_seconds", "postroom_leases_held",
                 "postroom_database_commits_total", "postroom_database_commit_failures_total"):
        assert (name, ()) in samples, name


def test_health_command_says_ready_or_not(ops: Daemon, fresh_root: Path,
                                          s3_server: MotoServer) -> None:
    del s3_server  # its fixture puts the test credentials in the environment
    ok = ops.cli("health", "--url", ops.url, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("ok"), ok.stdout
    assert json.loads(ops.cli("health", "--url", ops.url, "--json").stdout)["status"] == "ok"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = ops.cli("health", "--url", closed, check=False)
    assert down.returncode == 1 and "unreachable" in down.stdout
    own = start_moto_server(fresh_root.parent / "moto")
    try:
        section = (f'[storage]\nbackend = "s3"\nbucket = "{own.new_bucket()}"\n'
                   f'endpoint_url = "{own.endpoint_url}"\nregion = "us-east-1"\n')
        with running_daemon(fresh_root, extra=section) as d:
            assert d.cli("health", check=False).returncode == 0  # URL from http.listen
            own.stop()
            sick = d.cli("health", "--timeout", "60", check=False)
            assert sick.returncode == 1 and "storage" in sick.stdout, sick.stdout
    finally:
        own.stop()


class NotifySocket:
    """A datagram socket standing in for systemd's, collecting what the daemon says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def seen(self, field: str) -> list[int]:
        return [i for i, m in enumerate(list(self.messages)) if field in m.splitlines()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_systemd_hears_ready_watchdog_reload_and_stopping(fresh_root: Path,
                                                          tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    try:
        with running_daemon(fresh_root, pipeline='directory_refresh = "300s"', env=env) as d:
            d.wait_for(lambda: notify.seen("READY=1"), 10, "READY=1")
            d.add_agent("lee", "lee@agents.test")
            d.wait_for(lambda: len(notify.seen("WATCHDOG=1")) >= 3, 10, "watchdog pings")
            # A connection open across the reload keeps working.
            with d.smtp() as open_conn:
                open_conn.ehlo("relay.example")
                d.cli("agent", "remove", "lee")
                assert d.rcpt_code("lee@agents.test") == 250  # the snapshot is 300 s fresh
                ready_before = len(notify.seen("READY=1"))
                d.proc.send_signal(signal.SIGHUP)
                d.wait_for(lambda: len(notify.seen("READY=1")) > ready_before, 10, "reload")
                reloading = notify.seen("RELOADING=1")
                assert reloading and reloading[-1] < notify.seen("READY=1")[-1]
                assert any(m.startswith("MONOTONIC_USEC=") for m in
                           notify.messages[reloading[-1]].splitlines())
                assert d.rcpt_code("lee@agents.test") == 550  # re-read at SIGHUP
                d.add_agent("may", "may@agents.test")
                open_conn.mail("s@example.org")
                assert open_conn.rcpt("may@agents.test")[0] == 250
                assert open_conn.data(plain("may@agents.test").as_bytes())[0] == 250
            d.wait_for(lambda: d.events("daemon.reloaded"), 5, "the reload's log line")
        assert notify.seen("STOPPING=1")
        statuses = [line for m in notify.messages for line in m.splitlines()
                    if line.startswith("STATUS=")]
        assert any("connections" in line and "transactions" in line for line in statuses)
    finally:
        notify.close()


def _backdate(root: Path, message_id: str, days: int) -> None:
    when = (datetime.now(UTC) - timedelta(days=days)).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(root / "var" / "postroom.db") as db:
        db.execute("UPDATE messages SET received_at = ? WHERE id = ?", (when, message_id))


def test_retention_purges_old_messages_and_keeps_their_rows(ops: Daemon,
                                                           kim: dict[str, Any]) -> None:
    word = "zq" + os.urandom(5).hex()
    old = ops.send(with_attachment(
        "kim@agents.test", b"old bytes", file_name="old.txt", content_type="text/plain",
        subject=f"old {word}", text="the answer\n\nOn Mon, 1 Jan 2024, Ann wrote:\n> a quote\n"),
        ["kim@agents.test"])
    new = ops.send(with_attachment("kim@agents.test", b"new bytes"), ["kim@agents.test"])
    for message_id in (old, new):
        ops.wait_message(kim["api_key"], message_id)
    objects = ops.root / "var" / "objects"
    # Its attachment, the attachment's text and its new part are stored (SPEC §15) ...
    for name in ("0", "0.txt", "extracted.txt"):
        assert (objects / "inbound" / old / name).is_file(), name
    with ops.api(kim["api_key"]) as api:
        assert [m["id"] for m in api.get("/v1/messages", params={"q": word}).json()[
            "messages"]] == [old]
    _backdate(ops.root, old, 2)
    report = json.loads(ops.cli("gc", "--json", "--purge-only").stdout)
    assert old in report["messages"] and new not in report["messages"]
    with ops.api(kim["api_key"]) as api:
        view = api.get(f"/v1/messages/{old}").json()
        assert view["status"] == "purged" and view["text"] is None
        assert (view["preview"], view["extracted_text"]) == (None, None)
        assert view["attachments"][0]["status"] == "purged"
        # ... and go with it: its text, and its place in the search index.
        assert api.get(f"/v1/messages/{old}/attachments/0/text").status_code == 409
        assert api.get("/v1/messages", params={"q": word}).json()["messages"] == []
        assert api.post(f"/v1/messages/{old}/attachments/0/download").status_code == 409
        assert api.post(f"/v1/messages/{old}/raw/download").status_code == 409
        assert api.get(f"/v1/messages/{new}").json()["status"] == "ready"
    assert not (objects / "inbound" / old).exists() or not any(
        (objects / "inbound" / old).iterdir())
    assert not (objects / "raw" / f"{old}.eml").exists()
    assert (objects / "inbound" / new / "0").is_file()
    again = json.loads(ops.cli("gc", "--json", "--purge-only").stdout)
    assert again["purged"] == 0  # idempotent
    refused = ops.cli("reprocess", old, check=False)
    assert refused.returncode == 1, refused  # nothing left to extract from
    with ops.api(kim["api_key"]) as api:
        assert api.get(f"/v1/messages/{old}").json()["status"] == "purged"


def test_reprocess_and_the_operator_views(ops: Daemon, kim: dict[str, Any]) -> None:
    message_id = ops.send(with_attachment("kim@agents.test", b"again"), ["kim@agents.test"])
    first = ops.wait_message(kim["api_key"], message_id)
    out = json.loads(ops.cli("reprocess", message_id, "--json").stdout)
    assert out == {"reprocess": [message_id]}
    ops.wait_for(lambda: len([e for e in ops.events("pipeline.extracted")
                              if e.get("message_id") == message_id]) >= 2, 20, "re-extraction")
    second = ops.wait_message(kim["api_key"], message_id)
    assert second["status"] == "ready"
    assert second["attachments"][0]["id"] == first["attachments"][0]["id"]
    assert json.loads(ops.cli("reprocess", "--failed", "--json").stdout) == {"reprocess": []}
    # Mail extracted before postroom read text (no preview): --content takes exactly those.
    with sqlite3.connect(ops.root / "var" / "postroom.db") as db:
        db.execute("UPDATE messages SET preview = NULL, extracted_key = NULL WHERE id = ?",
                   (message_id,))
    out = json.loads(ops.cli("reprocess", "--content", "--json").stdout)
    assert out == {"reprocess": [message_id]}
    ops.wait_for(lambda: ops.wait_message(kim["api_key"], message_id)["preview"], 20,
                 "the text read again")
    assert json.loads(ops.cli("reprocess", "--content", "--json").stdout) == {"reprocess": []}
    assert ops.cli("reprocess", "--content", message_id, check=False).returncode == 1
    assert ops.cli("reprocess", "msg_nope", check=False).returncode == 1

    listed = json.loads(ops.cli("messages", "list", "--json", "--limit", "5").stdout)
    assert listed[0]["id"] == message_id and len(listed) <= 5
    ready = json.loads(ops.cli("messages", "list", "--json", "--status", "ready",
                               "--agent", "kim").stdout)
    assert all(m["status"] == "ready" for m in ready) and message_id in [m["id"] for m in ready]
    shown = json.loads(ops.cli("messages", "show", message_id, "--json").stdout)
    assert shown["id"] == message_id and shown["agents"] == [kim["id"]]
    assert shown["attachments"][0]["object_key"] == f"inbound/{message_id}/0"
    assert "again" not in json.dumps(shown)  # rows, never content
    assert "kim@agents.test" in ops.cli("messages", "list").stdout


def test_every_log_line_is_json_with_no_secret_or_content(ops: Daemon,
                                                          kim: dict[str, Any]) -> None:
    # Runs last in the module: the log holds the whole module's run (keys used, content sent).
    secrets = [kim["api_key"], MARKER, "old bytes", "Quarterly report"]
    signing_key = (ops.root / "var" / "signing.key")
    if signing_key.is_file():
        secrets.append(signing_key.read_bytes().hex()[:32])
    lines = list(ops.logs)
    assert len(lines) > 20
    for event in lines:
        assert event.get("event") != "unparsed", event
        assert {"event", "level", "timestamp"} <= set(event), event
        text = json.dumps(event)
        for secret in secrets:
            assert secret not in text, (secret[:12], event)
    assert all("message_id" in e for e in lines if e["event"] in (
        "smtp.transaction", "attachment.state", "message.state", "pipeline.extracted"))
    assert not any(secret in line for line in ops.stderr for secret in secrets[:2])


def test_a_transfer_stalled_past_the_drain_deadline_gets_421_and_nothing_is_kept(
        fresh_root: Path) -> None:
    from tests.harness import Raw

    with running_daemon(fresh_root, smtp='drain_timeout = "2s"') as d:
        agent = d.add_agent("ola", "ola@agents.test")
        stalled = Raw.in_data(d.smtp_port, "ola@agents.test")
        stalled.send(b"Subject: never finished\r\n\r\n" + b"x" * 10_000 + b"\r\n")
        d.wait_for(lambda: d.proc.poll() is None, 1)
        d.proc.send_signal(signal.SIGTERM)
        assert stalled.reply().startswith(b"421 4.3.2"), "no 421 at the drain deadline"
        stalled.close()
        assert d.proc.wait(30) == 0
        stopping = d.events("daemon.stopping")
        assert stopping and stopping[0]["in_data"] == 1
    with running_daemon(fresh_root) as d:
        assert d.message_ids(agent["api_key"]) == []


def test_each_node_purges_on_its_own_schedule(fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra='[retention]\ndays = 1\ninterval = "1s"\n') as d:
        agent = d.add_agent("pia", "pia@agents.test")
        old = d.send(with_attachment("pia@agents.test", b"aged"), ["pia@agents.test"])
        d.wait_message(agent["api_key"], old)
        _backdate(d.root, old, 3)
        with d.api(agent["api_key"]) as api:
            d.wait_for(lambda: api.get(f"/v1/messages/{old}").json()["status"] == "purged",
                       15, "the periodic purge")
        d.wait_for(lambda: d.events("gc.done"), 5, "its log line")
