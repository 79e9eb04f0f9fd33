"""The real-world corpus (../shared/corpus) through a running daemon, as a relay delivers it.

Every message goes in over SMTP (bare LF made CRLF, a final CRLF added, dot-stuffed on the wire)
and must be accepted, stored byte for byte after our Received header, terminal within seconds,
and carry every attachment both reference parsers agree on. `make corpus` runs this alone.
The corpus is other people's work: it is read in place, never copied into the project.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import smtplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Daemon, queued_id, running_daemon

CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"
ABSENT = f"the shared corpus is not at {CORPUS}; it lives beside the repository"
# Without ../shared (a lone checkout) this test says so and the rest of the suite runs; CI always
# has ../shared, so there its absence is a broken checkout and fails.
pytestmark = pytest.mark.skipif(not (CORPUS / "messages").is_dir() and not os.environ.get("CI"),
                                reason=ABSENT)

DOMAIN = "corpus.test"
CONNECTIONS = 4  # SMTP connections (and HTTP clients) at once; the corpus is 21 MB
TERMINAL_SECONDS = 30.0  # after the last 250, every message must have finished extraction
MIN_AGREEMENT = 0.97
TERMINAL = ("ready", "partial", "failed")

# Reference attachments postroom does not list, on purpose. Each names the message and why.
KNOWN_DIFFERENCES = {
    "messages/mimekit/partial__message-partial.0.eml":
        "message/partial fragment 1 of 3: RFC 2046 §5.2.2 says a fragment is not a message "
        "until reassembled, so postroom keeps it as one opaque part; the stdlib parses it and "
        "base64-decodes the first third of the cut-off JPEG as if it were whole",
    "messages/mimekit/partial__rfc2046.0.eml":
        "message/partial fragment 1 of 2 (the RFC 2046 example): kept as one opaque part; "
        "the stdlib decodes the placeholder text of the half-sent audio/basic as base64",
}


# Our trace header: "Received: from …" then folded continuation lines, naming the message id.
RECEIVED = re.compile(rb"Received: from [^\r\n]*\r\n(?:\t[^\r\n]*\r\n)+")


def _as_relayed(raw: bytes) -> bytes:
    """The bytes a relay delivers over SMTP, as the reference was computed on."""
    crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return crlf if crlf.endswith(b"\r\n") else crlf + b"\r\n"


def _references() -> list[dict[str, Any]]:
    assert (CORPUS / "messages").is_dir(), ABSENT
    lines = (CORPUS / "reference.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _agreed(reference: dict[str, Any]) -> list[dict[str, Any]]:
    """Reference attachments both parsers stand behind and SPEC §5 lists as attachments."""
    if not reference["crosscheck"].get("ok") or reference["disagreements"]:
        return []
    return [
        attachment
        for attachment in reference["attachments"]
        # body_like: mostly the bodies of embedded messages, which SPEC §5 keeps inside the
        # .eml; reconstructed: header blocks the stdlib re-serialised, not the bytes sent.
        if not attachment.get("body_like") and not attachment.get("reconstructed")
    ]


@dataclass
class Delivery:
    """One corpus message: what was sent, and what the daemon made of it."""

    reference: dict[str, Any]
    data: bytes
    rcpt: str
    code: int = 0
    reply: bytes = b""
    message_id: str = ""
    exact: bool = False
    status: str = ""
    terminal_after: float = 0.0  # seconds from the last 250 until seen terminal
    missing: list[str] = field(default_factory=list)

    @property
    def file(self) -> str:
        return str(self.reference["file"])

    @property
    def mbox_separator(self) -> bool:
        """The file starts with an mbox "From " line, as 52 corpus files do."""
        return self.data.startswith(b"From ")


def _deliveries() -> list[Delivery]:
    out = []
    for i, reference in enumerate(_references()):
        data = _as_relayed((CORPUS / reference["file"]).read_bytes())
        # The bytes must be those the reference describes, or the comparison means nothing.
        assert (len(data), hashlib.sha256(data).hexdigest()) == (
            reference["size"], reference["sha256"]), reference["file"]
        # One address per message: two corpus files are identical, and the same bytes to the
        # same recipient would (rightly) be taken as a relay's retry.
        out.append(Delivery(reference, data, f"m{i}@{DOMAIN}"))
    return out


def _send_all(d: Daemon, deliveries: list[Delivery]) -> None:
    """Deliver over CONNECTIONS SMTP sessions at once, several transactions per session."""
    local = threading.local()
    sessions: list[smtplib.SMTP] = []

    def send(delivery: Delivery) -> None:
        if not hasattr(local, "smtp"):
            local.smtp = d.smtp()
            local.smtp.ehlo("relay.example")
            sessions.append(local.smtp)
        s: smtplib.SMTP = local.smtp
        code, reply = s.mail("relay@example.org", ["BODY=8BITMIME"])
        if code == 250:
            code, reply = s.rcpt(delivery.rcpt)
        if code == 250:
            code, reply = s.data(delivery.data)  # smtplib dot-stuffs and adds the final "."
        else:
            s.rset()
        delivery.code, delivery.reply = code, reply
        if code == 250:
            delivery.message_id = queued_id(reply)

    try:
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            list(pool.map(send, deliveries))
    finally:
        for s in sessions:
            s.quit()


def _check_all(d: Daemon, key: str, deliveries: list[Delivery]) -> None:
    """Wait for each message to be terminal, then compare its raw bytes and its attachments."""
    local = threading.local()
    clients: list[httpx.Client] = []
    sent = time.monotonic()

    def check(delivery: Delivery) -> None:
        if not hasattr(local, "api"):
            local.api = d.api(key)
            clients.append(local.api)
        api: httpx.Client = local.api
        while True:
            msg = api.get(f"/v1/messages/{delivery.message_id}").json()
            delivery.terminal_after = time.monotonic() - sent
            if msg["status"] in TERMINAL or delivery.terminal_after > TERMINAL_SECONDS:
                break
            time.sleep(0.05)
        delivery.status = msg["status"]
        meta = api.post(f"/v1/messages/{delivery.message_id}/raw/download").json()
        stored = api.get(meta["url"]).content
        trace = RECEIVED.match(stored)
        delivery.exact = (
            trace is not None
            and delivery.message_id.encode() in trace.group()
            and stored[trace.end():] == delivery.data
            and meta["sha256"] == hashlib.sha256(stored).hexdigest()
        )
        ours = {a["sha256"] for a in msg["attachments"]}
        delivery.missing = [f"part {a['path']} ({a['content_type']}, {a['size']} bytes)"
                            for a in _agreed(delivery.reference) if a["sha256"] not in ours]

    try:
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            list(pool.map(check, [x for x in deliveries if x.message_id]))
    finally:
        for client in clients:
            client.close()


def _agreement(deliveries: list[Delivery]) -> tuple[int, int]:
    """(found, compared): agreed reference attachments postroom lists, out of all of them."""
    compared = sum(len(_agreed(x.reference)) for x in deliveries)
    return compared - sum(len(x.missing) for x in deliveries), compared


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole if whole else 0:.1%})"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Delivery]:
    """The whole corpus delivered to one daemon and checked; prints the figures."""
    deliveries = _deliveries()
    smtp = f'max_message_size = "64MB"\nmax_connections = {CONNECTIONS * 4}'
    with running_daemon(tmp_path_factory.mktemp("corpus"), smtp=smtp) as d:
        key = d.add_agent("corpus", f"*@{DOMAIN}")["api_key"]
        started = time.monotonic()
        _send_all(d, deliveries)
        sent = time.monotonic()
        _check_all(d, key, [x for x in deliveries if x.code == 250])
        checked = time.monotonic()

    total = len(deliveries)
    accepted = [x for x in deliveries if x.code == 250]
    terminal = [x for x in accepted if x.status in TERMINAL]
    slowest = max((x.terminal_after for x in terminal), default=0.0)
    print(f"\ncorpus through SMTP: {total} messages sent in {sent - started:.1f}s "
          f"over {CONNECTIONS} connections, checked in {checked - sent:.1f}s")
    print(f"  accepted   {_share(len(accepted), total)}")
    print(f"  exact      {_share(sum(x.exact for x in accepted), total)}")
    print(f"  terminal   {_share(len(terminal), total)}, the last {slowest:.1f}s after the "
          "last 250")
    print(f"  agreement  {_share(*_agreement(accepted))} of the reference attachments both "
          "parsers agree on")
    print(f"  mbox line  {_share(*_agreement([x for x in accepted if x.mbox_separator]))} of "
          "those in the messages that start with an mbox \"From \" line")
    for x in accepted:
        if x.missing:
            why = KNOWN_DIFFERENCES.get(x.file, "UNEXPLAINED")
            print(f"  missed {x.file}: {'; '.join(x.missing)[:200]}\n    why: {why}")
    return deliveries


def test_every_corpus_message_is_accepted(corpus: list[Delivery]) -> None:
    assert [(x.file, x.code, x.reply) for x in corpus if x.code != 250] == []


def test_every_raw_message_is_stored_exactly_after_our_received_header(
        corpus: list[Delivery]) -> None:
    assert [x.file for x in corpus if not x.exact] == []


def test_every_message_is_terminal_within_seconds(corpus: list[Delivery]) -> None:
    assert [(x.file, x.status) for x in corpus if x.status not in TERMINAL] == []


def test_attachments_agree_with_both_reference_parsers(corpus: list[Delivery]) -> None:
    found, compared = _agreement(corpus)
    unexplained = {x.file: x.missing for x in corpus
                   if x.missing and x.file not in KNOWN_DIFFERENCES}
    assert found / compared >= MIN_AGREEMENT, unexplained
    assert unexplained == {}


def test_an_mbox_from_line_does_not_hide_the_attachments(corpus: list[Delivery]) -> None:
    """52 corpus files start with an mbox "From " line; after our Received header it sits
    among the headers, where it must be skipped (as the stdlib does), not end them."""
    assert {x.file: x.missing for x in corpus if x.mbox_separator and x.missing} == {}
