"""postroom → Postfix (a private instance, the smarthost) → a capturing server: what an agent
sends leaves through a real MTA with its VERP sender, its Bcc kept off the headers, its DKIM
signature intact, and its attachment's exact bytes."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import dkim
import pytest

from tests.capture import CaptureServer, free_port
from tests.harness import running_daemon
from tests.outbound.test_compose import _rsa_key
from tests.postfix import ensure_installed, master_pids, private_postfix, smtp_relay


@pytest.fixture(scope="module", autouse=True)
def postfix_installed() -> Iterator[None]:
    """Postfix installed (scripts/install-postfix.sh, which `make test` runs) or the module
    fails saying why; afterwards, no Postfix master that was not there before."""
    reason = ensure_installed()
    if reason is not None:
        pytest.fail(f"the smarthost test needs Postfix and root: {reason}")
    before = master_pids()
    yield
    assert master_pids() <= before, "a Postfix master outlived the test"


def test_mail_sent_through_postfix_arrives_signed_with_its_exact_attachment(
        fresh_root: Path, tmp_path: Path) -> None:
    record = _rsa_key(tmp_path / "dkim.pem").encode()
    port = free_port()
    with CaptureServer() as far_end, private_postfix(smtp_relay(far_end.port), listen=port):
        outbound = (f'[outbound]\nrelay = "smtp://127.0.0.1:{port}"\npoll_interval = "0.2s"\n'
                    f'[[outbound.dkim]]\ndomain = "agents.test"\nselector = "pf"\n'
                    f'key_file = "{tmp_path / "dkim.pem"}"\n')
        with running_daemon(fresh_root, extra=outbound) as d:
            alice = d.add_agent("alice", "alice@agents.test")
            data = os.urandom(120_000)
            with d.api(alice["api_key"]) as a:
                up = a.post("/v1/uploads", files={"file": ("scan.pdf", data,
                                                          "application/pdf")}).json()
                sent = a.post("/v1/messages", json={
                    "to": ["carol@example.test"], "bcc": ["audit@example.test"],
                    "subject": "via postfix", "text": "see attached",
                    "attachments": [{"key": up["object_key"]}]}).json()
                captured = far_end.wait_for(1, within=60)
                deadline = time.monotonic() + 30
                while {r["status"] for r in a.get(f"/v1/messages/{sent['id']}").json()[
                        "deliveries"]} != {"sent"}:
                    assert time.monotonic() < deadline, "the relay's 250 was not recorded"
                    time.sleep(0.05)
    [got] = captured
    assert got.mail_from == f"bounces+{sent['id']}@agents.test"
    assert sorted(got.rcpt_tos) == ["audit@example.test", "carol@example.test"]
    parsed = message_from_bytes(got.data, policy=policy.default)
    assert "Bcc" not in parsed and parsed["Subject"] == "via postfix"
    assert "postfix.test.example" in " ".join(parsed.get_all("Received") or [])
    [part] = list(parsed.iter_attachments())
    assert part.get_filename() == "scan.pdf"
    content = part.get_content()
    assert isinstance(content, bytes) and hashlib.sha256(content).digest() == \
        hashlib.sha256(data).digest()

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"pf._domainkey.agents.test." else None

    assert dkim.verify(got.data, dnsfunc=lookup)  # Postfix's Received on top does not break it
