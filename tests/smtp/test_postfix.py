"""A real Postfix in front of postroom, relaying over SMTP and over LMTP: mail submitted with
Postfix's sendmail arrives ready with its exact bytes and a trace of both hops, and a 451 while
postroom's object store (moto's S3 server, stopped and started again) is down is retried by
Postfix until the message is stored once. Each Postfix is a private instance (tests/postfix.py)
with no listener; the system's Postfix is never started and nothing ever listens on port 25.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.smtp.policy import TRY_LATER
from tests.harness import Daemon, running_daemon
from tests.mail import plain, with_attachment
from tests.postfix import (
    HOSTNAME,
    PostfixInstance,
    ensure_installed,
    listening_ports,
    lmtp_relay,
    master_pids,
    port_25_listens,
    private_postfix,
    smtp_relay,
)
from tests.s3server import S3_ENV, S3_ENV_REMOVED, MotoServer, start_moto_server

RCPT = "rcpt@agents.test"
OTHER = "other@agents.test"
KEYS = {RCPT: "pr_postfix_test_key_rcpt_0123456789abcdef",
        OTHER: "pr_postfix_test_key_other_0123456789abcdef"}
AGENTS = "".join(f'[[agents]]\nname = "{a.split("@")[0]}"\naddresses = ["{a}"]\n'
                 f'api_key_env = "KEY_{a.split("@")[0].upper()}"\n' for a in KEYS)
KEY_ENV = {f"KEY_{a.split('@')[0].upper()}": key for a, key in KEYS.items()}


@pytest.fixture(scope="module", autouse=True)
def postfix_installed() -> Iterator[None]:
    """Postfix installed (scripts/install-postfix.sh, which `make test` runs) or the module
    fails saying why; afterwards, no Postfix master and no port-25 listener that was not there
    before."""
    reason = ensure_installed()
    if reason is not None:
        pytest.fail(f"the Postfix tests need Postfix and root: {reason}")
    masters_before, port_25_before = master_pids(), port_25_listens()
    yield
    assert master_pids() <= masters_before, "a Postfix master outlived the tests"
    assert port_25_before or not port_25_listens(), "something listens on port 25 now"


@dataclass
class Stack:
    """Postfix relaying to postroom (speaking `protocol`), which stores into moto's S3."""

    protocol: str
    daemon: Daemon
    postfix: PostfixInstance
    store: MotoServer
    bucket: str


@pytest.fixture(scope="module", params=["smtp", "lmtp"])
def stack(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    protocol: str = request.param
    root = tmp_path_factory.mktemp(f"postfix-{protocol}")
    with pytest.MonkeyPatch.context() as env:
        for name in S3_ENV_REMOVED:
            env.delenv(name, raising=False)
        for name, value in S3_ENV.items():
            env.setenv(name, value)
        # Its own S3 server: the retry test stops it, and moto forgets everything on a restart.
        store = start_moto_server(root / "moto")
        stack: Stack | None = None
        try:
            bucket = store.new_bucket()
            s3 = (f'[storage]\nbackend = "s3"\nbucket = "{bucket}"\n'
                  f'endpoint_url = "{store.endpoint_url}"\nregion = "us-east-1"\n')
            with running_daemon(root / "postroom", smtp=f'protocol = "{protocol}"',
                                extra=s3 + AGENTS, env=KEY_ENV) as d:
                relay = lmtp_relay if protocol == "lmtp" else smtp_relay
                with private_postfix(relay(d.smtp_port)) as postfix:
                    stack = Stack(protocol, d, postfix, store, bucket)
                    yield stack
        finally:
            (stack.store if stack else store).stop()


def new_ids(d: Daemon, rcpt: str, before: set[str]) -> list[str]:
    """The ids `rcpt`'s agent can list now that were not in `before`."""
    return [i for i in d.message_ids(KEYS[rcpt]) if i not in before]


def wait_delivered(s: Stack, rcpt: str, before: set[str], header_id: str,
                   timeout: float = 20.0) -> dict[str, Any]:
    """Wait until one new message reached `rcpt`'s agent and is ready; the full message."""
    found = wait_until(lambda: new_ids(s.daemon, rcpt, before), timeout,
                       f"{header_id} to reach {rcpt}", s)
    assert len(found) == 1, found
    message = s.daemon.wait_message(KEYS[rcpt], found[0])
    assert message["status"] == "ready", message
    assert message["message_id"] == header_id, message
    return message


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, s: Stack) -> Any:
    """Daemon.wait_for, with Postfix's queue and log in the message when time runs out."""
    try:
        return s.daemon.wait_for(predicate, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}\nPostfix queue: {s.postfix.queue()}\n"
                             f"Postfix log:\n{s.postfix.log_tail()}") from None


def download(d: Daemon, rcpt: str, path: str) -> bytes:
    """POST a download path of the API, then GET the presigned URL it answers."""
    with d.api(KEYS[rcpt]) as api:
        r = api.post(path)
        assert r.status_code == 200, r.text
        url = r.json()["url"]
    got = httpx.get(url, timeout=60)
    assert got.status_code == 200, got.text
    return got.content


def assert_exact_attachment(s: Stack, message: dict[str, Any], payload: bytes) -> None:
    [att] = message["attachments"]
    assert att["status"] == "ready", att
    assert att["sha256"] == hashlib.sha256(payload).hexdigest()
    got = download(s.daemon, RCPT, f"/v1/messages/{message['id']}/attachments/0/download")
    assert hashlib.sha256(got).hexdigest() == att["sha256"]


def pdf() -> bytes:
    return b"%PDF-1.7\n" + os.urandom(150_000) + b"\n%%EOF\n"


def test_the_private_postfix_listens_on_no_port(stack: Stack) -> None:
    """It takes mail only from sendmail: no listener, on port 25 or any other."""
    processes = stack.postfix.processes()
    master = int((stack.postfix.root / "queue" / "pid" / "master.pid").read_text())
    assert master in processes, processes  # it does run
    assert listening_ports(processes) == []
    assert listening_ports([stack.daemon.proc.pid]) != []  # the check does see listeners


def test_sendmail_mail_with_an_attachment_arrives_ready_with_its_exact_bytes(
        stack: Stack) -> None:
    payload = pdf()
    msg = with_attachment(RCPT, payload, subject=f"scan via {stack.protocol}")
    before = set(stack.daemon.message_ids(KEYS[RCPT]))
    stack.postfix.sendmail(msg.as_bytes(), [RCPT])
    message = wait_delivered(stack, RCPT, before, msg["Message-ID"])
    assert message["mail_from"] == "sender@example.org"
    assert message["subject"] == f"scan via {stack.protocol}"
    assert_exact_attachment(stack, message, payload)


def test_sendmail_t_to_two_agents_is_one_message_traced_through_postfix_then_postroom(
        stack: Stack) -> None:
    msg = plain(RCPT, subject="for both")
    msg["Cc"] = OTHER
    before = {a: set(stack.daemon.message_ids(KEYS[a])) for a in (RCPT, OTHER)}
    stack.postfix.sendmail(msg.as_bytes())  # -t: the recipients come from To and Cc
    first = wait_delivered(stack, RCPT, before[RCPT], msg["Message-ID"])
    second = wait_delivered(stack, OTHER, before[OTHER], msg["Message-ID"])
    assert first["id"] == second["id"]  # one transaction with two RCPTs: one stored message
    raw = download(stack.daemon, OTHER, f"/v1/messages/{first['id']}/raw/download")
    headers = email.message_from_bytes(raw, policy=email.policy.compat32)
    trace = [" ".join(h.split()) for h in headers.get_all("Received", [])]
    protocol = stack.protocol.upper().replace("SMTP", "ESMTP")
    assert len(trace) == 2, trace
    postroom_hop, postfix_hop = trace  # the newest hop is on top
    assert postroom_hop.startswith(
        f"from {HOSTNAME} ([127.0.0.1]) by mx.test.example (postroom) with {protocol} "
        f"id {first['id']};"), postroom_hop
    assert postfix_hop.startswith(f"by {HOSTNAME} (Postfix, from userid 0) id "), postfix_hop
    assert raw.startswith(b"Received: from " + HOSTNAME.encode())


def test_a_451_while_the_store_is_down_is_retried_by_postfix_and_stored_once(
        stack: Stack, tmp_path: Path) -> None:
    """Runs last for its stack: moto starts again empty, so earlier messages' objects are gone."""
    d, postfix = stack.daemon, stack.postfix
    stack.store.stop()
    payload = pdf()
    msg = with_attachment(RCPT, payload, subject=f"retried via {stack.protocol}")
    before = set(d.message_ids(KEYS[RCPT]))
    postfix.sendmail(msg.as_bytes(), [RCPT])

    def deferred_by_451() -> dict[str, Any] | None:
        queue = postfix.queue()
        return next((m for m in queue if m["queue_name"] == "deferred"
                     and f"said: {TRY_LATER}" in m["recipients"][0].get("delay_reason", "")),
                    None)
    deferred = wait_until(deferred_by_451, 30, "Postfix to defer the message on a 451", stack)
    assert [r["address"] for r in deferred["recipients"]] == [RCPT]
    assert new_ids(d, RCPT, before) == []
    refused = [e for e in d.events("smtp.transaction") if e.get("result") == "451"]
    assert refused and all(e["message_id"] is None for e in refused), refused

    stack.store = restart_store(stack.store, stack.bucket, tmp_path)
    postfix.flush()
    message = wait_delivered(stack, RCPT, before, msg["Message-ID"])
    assert_exact_attachment(stack, message, payload)
    wait_until(lambda: postfix.queue() == [], 20, "Postfix's queue to empty", stack)
    assert new_ids(d, RCPT, before) == [message["id"]]  # stored once
    assert f"{deferred['queue_id']}: removed" in (postfix.root / "maillog").read_text()


def restart_store(old: MotoServer, bucket: str, log_dir: Path,
                  timeout: float = 30.0) -> MotoServer:
    """moto again on the port postroom's config names, with the (empty) bucket made anew."""
    env = {k: v for k, v in os.environ.items() if k not in S3_ENV_REMOVED} | S3_ENV
    log_path = log_dir / "moto-again.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(old.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    server = MotoServer(proc, old.port, log_path)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(server.endpoint_url + "/", timeout=1).status_code == 200:
                server.client().create_bucket(Bucket=bucket)
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError("moto did not start again:\n" + log_path.read_text(errors="replace"))
