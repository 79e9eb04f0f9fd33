"""`running_daemon()`: the real `postroom serve` in a subprocess, on ephemeral loopback ports.

Each daemon gets a temp directory with its own config.toml, SQLite file and object store. The
harness reads the daemon's JSON log lines to learn the bound ports and keeps every line for
tests that check the logs. Stopping sends SIGTERM and expects exit status 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]

BASE_CONFIG = """
[smtp]
listen = "127.0.0.1:0"
hostname = "mx.test.example"
{smtp}

[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:{{HTTP_PORT}}"

[pipeline]
lease = "3s"
sweep_interval = "0.5s"
{pipeline}

[log]
format = "json"
level = "info"

{extra}
"""


class Raw:
    """A hand-driven SMTP client for what smtplib will not do (pipelining, slow DATA)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf.split(b"\r\n", 1)
        return out

    def reply(self) -> bytes:
        """One whole (possibly multi-line) reply."""
        while True:
            ln = self.line()
            if ln[3:4] != b"-":
                return ln

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    @classmethod
    def in_data(cls, port: int, rcpt: str) -> Raw:
        """A connection that has said EHLO, MAIL, RCPT and DATA and got 354."""
        c = cls(port)
        assert c.reply().startswith(b"220")
        c.send(f"EHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        for expected in (b"250", b"250", b"250", b"354"):
            reply = c.reply()
            assert reply.startswith(expected), reply
        return c



@dataclass
class Daemon:
    """A running `postroom serve` and what the tests need to talk to it."""

    root: Path
    config_path: Path
    proc: subprocess.Popen[bytes]
    smtp_port: int = 0
    http_port: int = 0
    logs: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    pumps: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `postroom ARGS --config <this daemon's config>`."""
        return subprocess.run(
            [sys.executable, "-m", "daemon", *args, "--config", str(self.config_path)],
            capture_output=True, text=True, check=check, cwd=self.root, env=self.env,
            timeout=60)

    def add_agent(self, name: str, *addresses: str) -> dict[str, Any]:
        """Create an agent through the CLI and wait (≤ 5 s, SPEC §7) until RCPT accepts it."""
        args = ["agent", "add", name]
        for a in addresses:
            args += ["--address", a]
        out: dict[str, Any] = json.loads(self.cli(*args, "--json").stdout)
        probe = addresses[0].replace("*@", "probe@")
        self.wait_for(lambda: self.rcpt_code(probe) == 250, 5.0, f"RCPT of {probe}")
        return out

    def rcpt_code(self, address: str) -> int:
        """The reply code RCPT TO:<address> gets now."""
        with self.smtp() as s:
            s.ehlo("probe.example")
            s.mail("probe@example.org")
            return int(s.rcpt(address)[0])

    def api(self, key: str, timeout: float = 40) -> httpx.Client:
        """A client of the API as `key`; a request unanswered after `timeout` s raises."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"},
                            timeout=timeout)

    def smtp(self, timeout: float = 30) -> smtplib.SMTP:
        """An SMTP client; a reply that takes over `timeout` s raises."""
        return smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=timeout)

    def send(self, msg: EmailMessage | bytes, rcpts: list[str],
             sender: str = "sender@example.org") -> str:
        """Deliver over SMTP; returns the queued message id from the 250 reply."""
        data = msg.as_bytes() if isinstance(msg, EmailMessage) else msg
        with self.smtp() as s:
            s.ehlo("client.example")
            s.mail(sender)
            for r in rcpts:
                code, resp = s.rcpt(r)
                assert code == 250, (code, resp)
            code, resp = s.data(data)
        assert code == 250, (code, resp)
        return queued_id(resp)

    def try_send(self, data: bytes, rcpt: str, timeout: float = 30) -> tuple[int, bytes]:
        """One transaction to one recipient; the reply to DATA, whatever it is (a reply that
        takes over `timeout` s raises)."""
        with self.smtp(timeout) as s:
            s.ehlo("client.example")
            s.mail("s@example.org")
            s.rcpt(rcpt)
            code, text = s.data(data)
        return code, text

    def message_ids(self, key: str, page: int = 200) -> list[str]:
        """Every message id the agent can list, following the cursor."""
        ids: list[str] = []
        after = None
        with self.api(key) as api:
            while True:
                params: dict[str, Any] = {"limit": page}
                if after:
                    params["after"] = after
                body = api.get("/v1/messages", params=params).json()
                ids += [m["id"] for m in body["messages"]]
                after = body["next_cursor"]
                if not body["has_more"]:
                    return ids

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.logs) if e.get("event") == name]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0,
                 what: str = "condition") -> Any:
        """Poll `predicate` until it returns something truthy or `timeout` passes."""
        return wait_until(predicate, timeout, what)

    def wait_message(self, key: str, message_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """Poll GET /v1/messages/{id} until its status is terminal."""
        with self.api(key) as client:
            def done() -> dict[str, Any] | None:
                r = client.get(f"/v1/messages/{message_id}")
                if r.status_code == 200 and r.json()["status"] not in ("received", "processing"):
                    return dict(r.json())
                return None
            result: dict[str, Any] = self.wait_for(done, timeout, f"message {message_id}")
            return result

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("daemon did not stop within the deadline") from None
        finally:
            self.close_pipes()

    def close_pipes(self) -> None:
        """Close the daemon's pipes once their readers saw EOF (never while one still reads)."""
        for t, stream in zip(self.pumps, (self.proc.stdout, self.proc.stderr), strict=False):
            t.join(10)
            if t.is_alive():
                raise AssertionError("a process still holds the daemon's output open: "
                                     "a child outlived the daemon")
            if stream is not None:
                stream.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0,
               what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def queued_id(reply: bytes | str) -> str:
    text = reply.decode() if isinstance(reply, bytes) else reply
    assert "queued as " in text, text
    return text.rsplit("queued as ", 1)[1].strip()


# `POSTROOM_TEST_DATABASE=postgresql` runs every daemon the harness configures on a fresh
# PostgreSQL database instead of its own SQLite file (`make test` does so for the feature suites).
TEST_DATABASE = os.environ.get("POSTROOM_TEST_DATABASE", "sqlite")


def database_section(root: Path | None = None, upgraded: bool = True) -> str:
    """The `[database]` section this run's daemons get ("" for the SQLite default). A daemon
    restarted in the same `root` finds its own database again, as it finds its SQLite file."""
    if TEST_DATABASE == "sqlite":
        return ""
    if TEST_DATABASE != "postgresql":
        raise AssertionError(f"POSTROOM_TEST_DATABASE={TEST_DATABASE!r}: sqlite or postgresql")
    from tests import pgserver

    remembered = root / ".test-database-url" if root is not None else None
    if remembered is not None and remembered.is_file():
        url = remembered.read_text()
    else:
        url = pgserver.server().new_database(upgraded)
        if remembered is not None:
            remembered.write_text(url)
    return f'[database]\nurl = "{url}"\n'


_DNS: list[Any] = []  # this test process's one empty DNS server, started when first needed


def hermetic_dns() -> str:
    """The address of a DNS server on loopback that knows no name (every answer NXDOMAIN, at
    once): daemons of the tests verify senders (SPEC §13) without asking the machine's
    resolvers, unless a test gives an [auth] section of its own."""
    if not _DNS:
        from tests.dnsserver import Zone, start_dns

        _DNS.append(start_dns(Zone()))
    return str(_DNS[0].address)


def write_config(root: Path, smtp: str = "", pipeline: str = "", extra: str = "") -> Path:
    path = root / "config.toml"
    if "[database]" not in extra:
        extra = database_section(root) + extra
    if "[auth]" not in extra:
        # nice 0: the suite keeps both cores busy, and a verifier at 10 would make every
        # test that waits for `ready` wait for leftover CPU.
        extra += f'\n[auth]\ndns_servers = ["{hermetic_dns()}"]\nnice = 0\n'
    path.write_text(BASE_CONFIG.format(smtp=smtp, pipeline=pipeline, extra=extra))
    return path


def _pump(stream: Any, sink: list[Any], parse: bool, ready: threading.Event) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if not parse:
            sink.append(line)
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = {"event": "unparsed", "line": line}
        sink.append(event)
        if event.get("event") == "daemon.ready":
            ready.set()
    ready.set()


def start_daemon(root: Path, config_path: Path, env: dict[str, str] | None = None,
                 timeout: float = 60.0) -> Daemon:
    """Start `postroom serve`, wait for its ready line, fill in ports."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    # The public URL must name the HTTP port, which is only known once bound: a fixed free port.
    text = config_path.read_text()
    if "{HTTP_PORT}" in text:
        port = _free_port()
        text = text.replace('listen = "127.0.0.1:0"\npublic_url',
                            'listen = "127.0.0.1:{HTTP_PORT}"\npublic_url')
        config_path.write_text(text.replace("{HTTP_PORT}", str(port)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "serve", "--config", str(config_path)],
        cwd=root, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    d = Daemon(root=root, config_path=config_path, proc=proc, env=full_env)
    ready = threading.Event()
    d.pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, d.logs, True, ready), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, d.stderr, False, threading.Event()),
                         daemon=True),
    ]
    for t in d.pumps:
        t.start()
    if not ready.wait(timeout) or proc.poll() is not None:
        proc.kill()
        proc.wait()
        d.close_pipes()
        raise AssertionError("daemon did not start:\n" + "\n".join(d.stderr[-40:]) +
                             "\n" + "\n".join(json.dumps(e) for e in d.logs[-20:]))
    info = next(e for e in d.logs if e.get("event") == "daemon.ready")
    d.smtp_port = int(info["smtp"][0].rsplit(":", 1)[1])
    d.http_port = int(info["http"][0].rsplit(":", 1)[1])
    return d


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (the extraction workers are the daemon's children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_daemon(root: Path, smtp: str = "", pipeline: str = "", extra: str = "",
                   env: dict[str, str] | None = None) -> Iterator[Daemon]:
    """Start a daemon in `root` and stop it cleanly (SIGTERM → exit 0) afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    config = write_config(root, smtp, pipeline, extra)
    d = start_daemon(root, config, env)
    try:
        yield d
    finally:
        status = d.stop()
        assert status == 0, f"daemon exited {status}:\n" + "\n".join(d.stderr[-40:])


def start_demo_daemon(root: Path) -> tuple[Daemon, str | None]:
    """The repository's own config.toml on ephemeral ports; returns the daemon and the demo key
    it printed (None when the agent existed already)."""
    root.mkdir(parents=True, exist_ok=True)
    text = (REPO / "config.toml").read_text()
    text = text.replace('listen = "127.0.0.1:2525"', 'listen = "127.0.0.1:0"')
    text = text.replace('listen = "127.0.0.1:8025"', 'listen = "127.0.0.1:{HTTP_PORT}"')
    text = text.replace('public_url = "http://127.0.0.1:8025"',
                        'public_url = "http://127.0.0.1:{HTTP_PORT}"')
    (root / "config.toml").write_text(text)
    d = start_daemon(root, root / "config.toml")
    printed = "\n".join(d.stderr)
    key = printed.split("API key:", 1)[1].split()[0] if "API key:" in printed else None
    return d, key
