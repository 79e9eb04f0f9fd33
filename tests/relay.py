"""A relay's delivery agents for fault tests: distinct messages sent over several connections,
each retried after a 4xx or a broken connection, as Postfix would, until it gets its 250.

Every transaction's reply is kept (and its duration, for reports), so a test can say "every
transaction got 250 or 451, none hung" (a transaction past TRANSACTION_TIMEOUT is given up by the
sender itself and counts as hung), and `check_exactly_once` then proves nothing accepted was lost
or doubled.
"""

from __future__ import annotations

import hashlib
import random
import smtplib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.harness import queued_id
from tests.mail import with_attachment

# Longer than any bounded wait of the daemon (S3 read timeout 30 s and its retries, the
# database's timeouts): a transaction that takes this long is a hang, and the sender gives up.
TRANSACTION_TIMEOUT = 90.0
HUNG = "hung"  # the error of a transaction given up after TRANSACTION_TIMEOUT


@dataclass
class Sent:
    """One distinct message of the load and what postroom must end up with for it."""

    marker: str
    data: bytes
    sha256s: list[str]
    message_id: str | None = None
    replies: list[str] = field(default_factory=list)


@dataclass
class Transaction:
    code: int | None  # None: the connection broke before a reply, or it hung
    seconds: float  # for reports only
    error: str = ""


def make_load(rcpt: str, count: int, rng: random.Random,
              sizes: tuple[int, ...] = (1_000, 20_000, 120_000)) -> list[Sent]:
    """`count` distinct messages to `rcpt`, each with one or two attachments of random bytes."""
    out = []
    for i in range(count):
        marker = f"load-{i}-{rng.getrandbits(48):012x}"
        payloads = [rng.randbytes(rng.choice(sizes)) for _ in range(rng.randint(1, 2))]
        msg = with_attachment(rcpt, payloads[0], file_name=f"{marker}-0.bin",
                              content_type="application/octet-stream", subject=marker)
        for j, extra in enumerate(payloads[1:], 1):
            msg.add_attachment(extra, maintype="application", subtype="octet-stream",
                               filename=f"{marker}-{j}.bin")
        out.append(Sent(marker, msg.as_bytes(), [hashlib.sha256(p).hexdigest()
                                                 for p in payloads]))
    return out


class Relay:
    """Sender threads working through `load` against whatever SMTP port `port()` names now
    (a restarted daemon listens on a new one). Stops by itself at `deadline` seconds."""

    def __init__(self, load: list[Sent], rcpt: str, port: Callable[[], int],
                 senders: int = 6, deadline: float = 180.0, retry_pause: float = 0.2) -> None:
        self.load, self.rcpt, self.port = load, rcpt, port
        self.senders, self.retry_pause = senders, retry_pause
        self.deadline = time.monotonic() + deadline
        self.transactions: list[Transaction] = []
        self._next = iter(range(len(load)))
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(senders)]

    def start(self) -> Relay:
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self._threads:
            t.join(max(1.0, self.deadline - time.monotonic() + TRANSACTION_TIMEOUT))
        assert not any(t.is_alive() for t in self._threads), "a sender never came back"

    def accepted(self) -> int:
        return sum(1 for s in self.load if s.message_id)

    def codes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in list(self.transactions):
            name = str(t.code) if t.code is not None else "cut off"
            out[name] = out.get(name, 0) + 1
        return out

    def _run(self) -> None:
        while True:
            with self._lock:
                i = next(self._next, None)
            if i is None:
                return
            sent = self.load[i]
            while sent.message_id is None and time.monotonic() < self.deadline:
                self._deliver(sent)
                if sent.message_id is None:
                    time.sleep(self.retry_pause)

    def _deliver(self, sent: Sent) -> None:
        started = time.monotonic()
        deadline = started + TRANSACTION_TIMEOUT

        def step(s: smtplib.SMTP) -> smtplib.SMTP:
            """`s`, with what is left of the transaction's time as its socket's timeout."""
            assert s.sock is not None
            s.sock.settimeout(max(0.001, deadline - time.monotonic()))
            return s

        try:
            port = self.port()
            with smtplib.SMTP("127.0.0.1", port, timeout=TRANSACTION_TIMEOUT) as s:
                step(s).ehlo("relay.example")
                code, text = step(s).mail("relay@example.org")
                if code == 250:
                    code, text = step(s).rcpt(self.rcpt)
                if code == 250:
                    code, text = step(s).data(sent.data)
        except (OSError, smtplib.SMTPException) as e:
            # smtplib reports a reply that timed out as a disconnection, the timeout its cause.
            hung = isinstance(e, TimeoutError) or isinstance(e.__context__, TimeoutError)
            self._record(sent, Transaction(None, time.monotonic() - started,
                                           HUNG if hung else type(e).__name__))
            return
        self._record(sent, Transaction(code, time.monotonic() - started,
                                       text.decode(errors="replace")[:80]))
        if code == 250:
            sent.message_id = queued_id(text)

    def _record(self, sent: Sent, t: Transaction) -> None:
        sent.replies.append(f"{t.code}: {t.error}")
        with self._lock:
            self.transactions.append(t)

    def check_replies(self) -> None:
        """Every reply was 250 or a 4xx (never a 5xx for our failure), no transaction hung."""
        bad = [t for t in self.transactions if t.code is not None and not (
            t.code == 250 or 400 <= t.code < 500)]
        assert not bad, bad[:5]
        hung = [t for t in self.transactions if t.error == HUNG]
        assert not hung, hung[:5]
        unaccepted = [s.replies[-5:] for s in self.load if s.message_id is None]
        assert not unaccepted, (len(unaccepted), unaccepted[:3])


def wait_ready(api: httpx.Client, message_id: str, within: float = 90.0) -> dict[str, Any]:
    """The message view once its status is terminal (or as it stands after `within`)."""
    deadline = time.monotonic() + within
    while True:
        r = api.get(f"/v1/messages/{message_id}")
        view: dict[str, Any] = r.json() if r.status_code == 200 else {"status": r.status_code}
        if view["status"] not in ("received", "processing", 503) or (
                time.monotonic() > deadline):
            return view
        time.sleep(0.1)


def listed_subjects(api: httpx.Client) -> list[str]:
    """The subject of every message the agent can list (one entry per stored message)."""
    out: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"after": after} if after else {})
        body = api.get("/v1/messages", params=params).json()
        out += [m["subject"] for m in body["messages"]]
        after = body["next_cursor"]
        if not body["has_more"]:
            return out


def check_exactly_once(api: httpx.Client, load: list[Sent]) -> tuple[int, int]:
    """Every accepted message is `ready` with its exact attachments, and the agent lists each
    distinct message once; returns (lost, duplicated), both asserted 0."""
    lost = []
    for sent in load:
        assert sent.message_id, sent.replies
        view = wait_ready(api, sent.message_id)
        ok = (view["status"] == "ready" and view["subject"] == sent.marker and
              [a["sha256"] for a in view["attachments"]] == sent.sha256s and
              all(a["status"] == "ready" for a in view["attachments"]))
        if not ok:
            lost.append((sent.marker, view.get("status"), view.get("error")))
    subjects = listed_subjects(api)
    duplicated = len(subjects) - len(set(subjects))
    missing = {s.marker for s in load} - set(subjects)
    assert not lost, (len(lost), lost[:5])
    assert not missing, sorted(missing)[:5]
    assert duplicated == 0, duplicated
    assert len({s.message_id for s in load}) == len(load)
    return len(lost), duplicated


def port_of(holder: dict[str, Any]) -> Callable[[], int]:
    """A `port()` for Relay that follows `holder["daemon"]` across restarts."""
    def port() -> int:
        d = holder.get("daemon")
        if d is None or d.proc.poll() is not None:
            raise ConnectionRefusedError("no daemon is up right now")
        return int(d.smtp_port)
    return port
