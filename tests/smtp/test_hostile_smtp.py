"""Hostile SMTP input at the sizes of issue 9 (SPEC §11), through a real socket to a real daemon.

Every case gets a clear reply or a recorded defect (read back through the HTTP API), the
daemon's memory is measured while it runs, and a plain message must still arrive `ready`
right after it. Smaller versions of some cases live in test_smtp.py; these are the big ones.
"""

from __future__ import annotations

import base64
import os
import resource
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import figures
from tests.harness import Daemon, Raw, process_tree, queued_id, running_daemon
from tests.mail import plain

# Short enough that the timeout cases take seconds, long enough that a loaded two-core machine
# never trips it while a well-behaved client is between two commands.
TIMEOUT_S = 4.0
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the cases that need only the default limits (and a short timeout)."""
    root = tmp_path_factory.mktemp("hostile")
    with running_daemon(root, smtp=f'timeout = "{TIMEOUT_S:g}s"') as d:
        yield d


@pytest.fixture(scope="module")
def agent(hostile: Daemon) -> dict[str, Any]:
    return hostile.add_agent("a", "a@t.test", "*@many.test")


# --- measuring memory -------------------------------------------------------------------------

def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0  # the process has exited: it holds nothing now


def _content_worker(pid: int) -> bool:
    """Whether `pid` is a content worker (`python -m daemon.extract_worker <parent> <memory>`):
    started on demand to read attachments' text, each capped at content.max_memory by its own
    RLIMIT_AS whatever the input, so not part of the growth the input causes."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"daemon.extract_worker" in args and len(args) - args.index(b"daemon.extract_worker") > 3


CONTENT_MAX_MEMORY = 1024 * MIB  # content.max_memory's default: a content worker's cap


class PeakMemory:
    """Peak RSS growth of the daemon and its extraction workers over a block.

    Each process's high-water mark is reset to its current RSS at the start (`clear_refs` 5),
    so at the end the sum of the marks minus the sum of the starting RSS bounds from above how
    far the tree's memory rose while the case ran (each process's own peak, summed). Content
    workers are left out (`_content_worker`): their bound is their own, checked here too."""

    def __init__(self, d: Daemon) -> None:
        self.pid = d.proc.pid
        self.base_kib = 0

    def _tree(self) -> list[int]:
        return [p for p in process_tree(self.pid) if not _content_worker(p)]

    def __enter__(self) -> PeakMemory:
        tree = self._tree()
        for p in tree:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        self.base_kib = sum(_status_kib(p, "VmRSS") for p in tree)
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def grown_mib(self) -> float:
        readers = [p for p in process_tree(self.pid) if _content_worker(p)]
        assert all(_status_kib(p, "VmPeak") <= CONTENT_MAX_MEMORY // 1024 for p in readers)
        peak = sum(_status_kib(p, "VmHWM") for p in self._tree())
        return (peak - self.base_kib) / 1024


def _assert_bounded(mem: PeakMemory, input_bytes: int, what: str) -> float:
    """The daemon may hold a hostile input a few times over while it parses it (bytes, the
    parser's views, the records and rows it makes), never without bound: ten times the input,
    plus 16 MiB for the interpreter's arenas and a message's working set (a few thousand part
    records and rows; test_spooling holds a 41 MB message's whole cost under 24 MiB)."""
    grown = mem.grown_mib()
    bound = 16 + 10 * input_bytes / MIB
    assert grown < bound, f"{what}: peak RSS grew {grown:.1f} MiB (bound {bound:.1f} MiB)"
    return grown


# --- helpers ----------------------------------------------------------------------------------

def _serves_normal_mail(d: Daemon, key: str, rcpt: str = "a@t.test") -> None:
    """A plain message delivered right after a hostile case arrives `ready`."""
    message = d.wait_message(key, d.send(plain(rcpt), [rcpt]))
    assert message["status"] == "ready", message


def _deliver(d: Daemon, raw: bytes, rcpt: str = "a@t.test") -> str:
    """Send `raw` exactly as given over a hand-driven connection; the queued message id."""
    c = Raw.in_data(d.smtp_port, rcpt)
    try:
        c.send(raw + b"\r\n.\r\n")
        reply = c.reply()
    finally:
        c.close()
    assert reply.startswith(b"250 2.0.0"), reply
    return queued_id(reply)


def _message(d: Daemon, key: str, message_id: str) -> dict[str, Any]:
    with d.api(key) as api:
        r = api.get(f"/v1/messages/{message_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def _raw(d: Daemon, key: str, message_id: str) -> bytes:
    with d.api(key) as api:
        link = api.post(f"/v1/messages/{message_id}/raw/download").json()
    return httpx.get(link["url"], timeout=30).content


def _attachment_bytes(d: Daemon, key: str, message_id: str, index: int) -> bytes:
    with d.api(key) as api:
        r = api.post(f"/v1/messages/{message_id}/attachments/{index}/download")
        assert r.status_code == 200, r.text
    return httpx.get(r.json()["url"], timeout=30).content


def _open_connections(d: Daemon) -> int:
    text = httpx.get(f"{d.url}/metrics", timeout=10).text
    line = next(ln for ln in text.splitlines()
                if ln.startswith("postroom_smtp_connections_open "))
    return int(float(line.split()[1]))


# --- the cases --------------------------------------------------------------------------------

def test_a_5000_part_message_lists_1000_parts_and_rejects_the_rest_as_part_limit(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    parts = b"".join(b"--P\r\nContent-Type: text/plain; name=f%d.txt\r\n\r\nfile %d\r\n" % (n, n)
                     for n in range(5000))
    raw = (b"From: s@example.org\r\nTo: a@t.test\r\nSubject: 5000 parts\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=P\r\n\r\n"
           b"--P\r\nContent-Type: text/plain\r\n\r\nthe body\r\n" + parts + b"--P--\r\n")
    with PeakMemory(hostile) as mem:
        message_id = _deliver(hostile, raw)
        m = hostile.wait_message(agent["api_key"], message_id, timeout=60)
        grown = _assert_bounded(mem, len(raw), "5000 parts")
    print(f"5000 parts: {len(raw)} bytes, peak RSS growth {grown:.1f} MiB")
    # limits.max_parts = 1000 (the default): 1000 files listed, the other 4000 summed up in one
    # rejected part, and the message is `partial` because of it.
    assert m["status"] == "partial", m["status"]
    atts = m["attachments"]
    assert len(atts) == 1001
    assert [a["file_name"] for a in atts[:2]] == ["f0.txt", "f1.txt"]
    assert atts[999]["file_name"] == "f999.txt" and atts[999]["status"] == "ready"
    assert all(a["status"] == "ready" for a in atts[:1000])
    summary = atts[1000]
    assert (summary["status"], summary["error"]) == ("rejected", "part_limit"), summary
    assert summary["defects"] == ["part_limit: 4000 parts not listed"]
    assert "part_limit: 4000 parts beyond 1000 not listed" in m["defects"]
    assert m["text"].startswith("the body")
    assert _attachment_bytes(hostile, agent["api_key"], message_id, 999) == b"file 999"
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)


def test_mime_nesting_1000_deep_is_kept_as_one_opaque_part_at_depth_32(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    depth = 1000
    opening = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n"
                       % (level, level + 1) for level in range(depth))
    closing = b"".join(b"\r\n--b%d--" % level for level in reversed(range(depth + 1)))
    leaf = b"--b%d\r\nContent-Type: application/pdf\r\n\r\n%%PDF-1.4 innermost\r\n" % depth
    multiparts = (b"From: s@example.org\r\nTo: a@t.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
                  b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + opening + leaf
                  + closing + b"\r\n")
    messages = b"Content-Type: application/pdf\r\n\r\n%PDF-1.4 innermost\r\n"
    for level in range(depth):
        messages = b"Subject: level %d\r\nContent-Type: message/rfc822\r\n\r\n" % level + messages
    with PeakMemory(hostile) as mem:
        deep_id = _deliver(hostile, multiparts)
        forwarded_id = _deliver(hostile, messages)
        deep = hostile.wait_message(agent["api_key"], deep_id, timeout=60)
        forwarded = hostile.wait_message(agent["api_key"], forwarded_id, timeout=60)
        grown = _assert_bounded(mem, len(multiparts) + len(messages), "1000 deep")
    print(f"1000 deep: {len(multiparts)} + {len(messages)} bytes, peak RSS growth {grown:.1f} MiB")
    # limits.max_depth = 32: everything below level 32 is one opaque part with the defect.
    [opaque] = deep["attachments"]
    assert "depth_limit" in opaque["defects"], opaque
    assert opaque["status"] == "ready" and opaque["content_type"] == "multipart/mixed", opaque
    assert opaque["path"] == ".".join(["1"] * 32), opaque["path"]
    inner = _attachment_bytes(hostile, agent["api_key"], deep_id, 0)
    assert inner.startswith(b"Content-Type: multipart/mixed; boundary=b32\r\n")
    assert b"%PDF-1.4 innermost" in inner
    # Forwarded messages 1000 deep: the .eml files of levels 0..32 are listed, each the
    # parent of the next, and the last one is not opened.
    listed = forwarded["attachments"]
    assert len(listed) == 33
    assert [a["parent"] for a in listed] == [None, *range(32)]
    assert "depth_limit" in listed[-1]["defects"], listed[-1]
    assert deep["status"] in ("ready", "partial") and forwarded["status"] in ("ready", "partial")
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)


def test_a_900_kb_header_line_is_accepted_and_stored_exactly(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    subject = b"s" * 900_000
    raw = (b"From: s@example.org\r\nTo: a@t.test\r\nSubject: " + subject + b"\r\n"
           b"X-Long: " + b"x" * 900_000 + b"\r\n\r\nthe body\r\n")
    with PeakMemory(hostile) as mem:
        message_id = _deliver(hostile, raw)
        m = hostile.wait_message(agent["api_key"], message_id)
        grown = _assert_bounded(mem, len(raw), "900 kB header line")
    print(f"900 kB header line: {len(raw)} bytes, peak RSS growth {grown:.1f} MiB")
    assert m["status"] == "ready", m
    assert m["text"].startswith("the body")
    assert m["subject"] is not None and m["subject"].startswith("sss")
    assert _raw(hostile, agent["api_key"], message_id).endswith(b"\r\n" + raw + b"\r\n")
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)


def test_nul_and_8bit_bytes_in_headers_are_stored_exactly_and_extracted_safely(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    multipart = (b"From: J\xf6rg \x00<s@example.org>\r\nTo: a@t.test\r\n"
                 b"Subject: caf\xc3\xa9 \x00 \xff\xfe broken utf-8\r\n"
                 b"X-Binary: \x00\x01\x02\x7f\x80\r\nMIME-Version: 1.0\r\n"
                 b"Content-Type: multipart/mixed; boundary=\"B\x00\xe9\"\r\n\r\n"
                 b"--B\x00\xe9\r\nContent-Type: text/plain; charset=\"\x00\xff\"\r\n\r\n"
                 b"body \xe9\r\n--B\x00\xe9\r\nContent-Type: application/pdf\r\n"
                 b"Content-Disposition: attachment; filename=\"r\x00\xe9sum\xe9\x01../x.pdf\"\r\n"
                 b"\r\n%PDF-1.4\r\n--B\x00\xe9--\r\n")
    # A NUL inside a field name: no header field, so the header block ends there.
    bad_name = (b"From: s@example.org\r\nTo: a@t.test\r\nSubject: bad name\r\n"
                b"X-Bin\x00ary: v\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n")
    multipart_id, bad_name_id = _deliver(hostile, multipart), _deliver(hostile, bad_name)
    m = hostile.wait_message(agent["api_key"], multipart_id)
    assert m["status"] == "ready", m
    assert _raw(hostile, agent["api_key"], multipart_id).endswith(b"\r\n" + multipart + b"\r\n")
    # The headers of note are text without the NUL (no PostgreSQL text column holds one).
    assert m["from"] == "J\u00f6rg \ufffd<s@example.org>", m["from"]
    assert "\x00" not in m["subject"] and m["subject"].endswith("broken utf-8")
    for defect in ("from: NUL replaced", "subject: NUL replaced",
                   "subject: 8-bit bytes that are not UTF-8 decoded as latin-1"):
        assert defect in m["defects"], m["defects"]
    assert m["text"] == "body \u00e9"  # an unknown charset: Latin-1
    [att] = m["attachments"]
    assert att["status"] == "ready", att
    assert att["file_name"] == "x.pdf"  # no NUL, no control character, no path
    assert att["original_file_name"] == "r\ufffd\u00e9sum\u00e9\x01../x.pdf"
    assert "original file name: NUL replaced" in att["defects"], att
    assert _attachment_bytes(hostile, agent["api_key"], multipart_id, 0) == b"%PDF-1.4"
    n = hostile.wait_message(agent["api_key"], bad_name_id)
    assert n["status"] == "ready" and n["subject"] == "bad name", n
    assert "headers: missing blank line before body" in n["defects"], n["defects"]
    assert n["text"].startswith("X-Bin\x00ary: v\r\n")  # kept as body text, not lost
    # In the envelope a NUL or bytes that are not UTF-8 are refused at once (5xx: the client's
    # input can never be stored), not with a 451 after DATA that a relay would retry for ever.
    c = Raw(hostile.smtp_port)
    try:
        assert c.reply().startswith(b"220")
        c.send(b"EHLO client.example\r\n")
        assert c.reply().startswith(b"250")
        for command, expected in [(b"MAIL FROM:<s\x00@example.org>", b"501 5.1.7"),
                                  (b"MAIL FROM:<s@ex\xe9mple.org>", b"501 5.1.7"),
                                  (b"MAIL FROM:<s@example.org>", b"250 2.1.0"),
                                  (b"RCPT TO:<r\x00@many.test>", b"501 5.1.3"),
                                  (b"RCPT TO:<r\xe9@many.test>", b"501 5.1.3"),
                                  (b"RCPT TO:<r\xc3\xa9@many.test>", b"250 2.1.5"),  # UTF-8
                                  (b"DATA", b"354")]:
            c.send(command + b"\r\n")
            reply = c.reply()
            assert reply.startswith(expected), (command, reply)
        c.send(b"Subject: after the refusals\r\n\r\nhi\r\n.\r\n")
        reply = c.reply()
        assert reply.startswith(b"250 2.0.0"), reply
    finally:
        c.close()
    after = hostile.wait_message(agent["api_key"], queued_id(reply))
    assert after["status"] == "ready" and after["recipients"] == ["r\u00e9@many.test"]
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)


def test_broken_base64_in_an_attachment_is_kept_with_a_defect(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    payload = os.urandom(300_000)
    good = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    garbage = good[:100_000] + b"!!$$ not base64 at all \xff\xfe\r\n" + good[100_000:]
    truncated = good[:-7]  # cut inside the last quantum: no padding, a dangling sextet
    raw = (b"From: s@example.org\r\nTo: a@t.test\r\nSubject: bad base64\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: text/plain\r\n\r\nbody text\r\n"
           b"--B\r\nContent-Type: application/octet-stream; name=garbage.bin\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + garbage +
           b"--B\r\nContent-Type: application/octet-stream; name=truncated.bin\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + truncated + b"\r\n"
           b"--B\r\nContent-Type: application/octet-stream; name=nothing.bin\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n%%%%\r\n--B--\r\n")
    with PeakMemory(hostile) as mem:
        message_id = _deliver(hostile, raw)
        m = hostile.wait_message(agent["api_key"], message_id)
        grown = _assert_bounded(mem, len(raw), "broken base64")
    print(f"broken base64: {len(raw)} bytes, peak RSS growth {grown:.1f} MiB")
    assert m["text"].startswith("body text")
    names = [a["file_name"] for a in m["attachments"]]
    assert names == ["garbage.bin", "truncated.bin", "nothing.bin"], names
    for att in m["attachments"]:
        # Never lost: kept (decoded leniently, or as the transfer bytes when it fails), and
        # the defect recorded.
        assert att["status"] in ("ready", "failed"), att
        assert any("base64" in defect for defect in att["defects"]) or att["error"], att
    garbage_bytes = _attachment_bytes(hostile, agent["api_key"], message_id, 0)
    assert garbage_bytes[:50_000] == payload[:50_000]
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)


def test_multipart_without_its_boundaries_is_kept_with_a_defect(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    head = (b"From: s@example.org\r\nTo: a@t.test\r\nSubject: %s\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=NEVER\r\n\r\n")
    never = head % b"no boundary" + (b"this text never meets its boundary\r\n" * 1000)
    unclosed = (head % b"unclosed" + b"--NEVER\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
                b"--NEVER\r\nContent-Type: application/pdf; name=cut.pdf\r\n\r\n%PDF-1.4 cut")
    never_id, unclosed_id = _deliver(hostile, never), _deliver(hostile, unclosed)
    nm = hostile.wait_message(agent["api_key"], never_id)
    um = hostile.wait_message(agent["api_key"], unclosed_id)
    assert nm["status"] in ("ready", "partial"), nm
    assert nm["defects"], nm
    assert um["status"] in ("ready", "partial"), um
    assert um["text"].startswith("body")
    [cut] = um["attachments"]
    assert cut["file_name"] == "cut.pdf" and cut["status"] == "ready", cut
    assert _attachment_bytes(hostile, agent["api_key"], unclosed_id, 0).startswith(b"%PDF-1.4 cut")
    assert um["defects"] or cut["defects"], um
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)


def test_a_message_that_is_only_headers_is_accepted_with_no_body(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    raw = b"From: s@example.org\r\nTo: a@t.test\r\nSubject: only headers"  # no CRLF CRLF
    message_id = _deliver(hostile, raw)
    m = hostile.wait_message(agent["api_key"], message_id)
    assert m["status"] == "ready", m
    assert m["subject"] == "only headers"
    assert m["attachments"] == [] and not m["text"]
    assert _raw(hostile, agent["api_key"], message_id).endswith(b"\r\n" + raw + b"\r\n")
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)


def test_10000_recipients_get_452_beyond_100_and_the_first_100_get_the_message(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    rcpts = [f"r{n}@many.test" for n in range(10_000)]
    c = Raw(hostile.smtp_port)
    try:
        assert c.reply().startswith(b"220")
        c.send(b"EHLO client.example\r\nMAIL FROM:<s@example.org>\r\n")
        assert c.reply().startswith(b"250") and c.reply().startswith(b"250")
        replies: list[bytes] = []
        for at in range(0, len(rcpts), 1000):  # pipelined, a thousand commands per write
            c.send(b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts[at:at + 1000]))
            replies += [c.reply() for _ in range(1000)]
        c.send(b"DATA\r\n")
        assert c.reply().startswith(b"354")
        c.send(plain("r0@many.test", subject="to ten thousand").as_bytes() + b"\r\n.\r\n")
        reply = c.reply()
        assert reply.startswith(b"250 2.0.0"), reply
        c.send(b"QUIT\r\n")
        assert c.reply().startswith(b"221")
    finally:
        c.close()
    assert all(r.startswith(b"250 2.1.5") for r in replies[:100]), replies[:100]
    assert all(r.startswith(b"452 4.5.3") for r in replies[100:]), set(replies[100:])
    m = hostile.wait_message(agent["api_key"], queued_id(reply))
    assert m["status"] == "ready"
    assert sorted(m["recipients"]) == sorted(rcpts[:100])
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)


def test_500_silent_connections_fill_the_limit_and_are_all_freed_by_the_timeout(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    limit = 500  # smtp.max_connections, the default
    wanted = limit + 50  # ours, plus the daemon's own files, sockets and pipes
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    daemon_limit = next(int(ln.split()[3]) for ln in
                        Path(f"/proc/{hostile.proc.pid}/limits").read_text().splitlines()
                        if ln.startswith("Max open files"))
    assert soft > wanted and daemon_limit > wanted + 50, \
        f"raise the open-files limit (ulimit -n): tests {soft}, daemon {daemon_limit}"
    hostile.wait_for(lambda: _open_connections(hostile) == 0, 10, "no connection open")
    silent: list[Raw] = []
    try:
        with PeakMemory(hostile) as mem:
            # One at a time, each greeted before the next: a burst of connects beyond the
            # listen backlog would wait for SYN retransmits (seconds), and the first clients
            # would reach their timeout before the last were in.
            for _ in range(limit):
                silent.append(Raw(hostile.smtp_port))
                assert silent[-1].reply().startswith(b"220")
            extra = Raw(hostile.smtp_port)
            assert extra.reply().startswith(b"421 4.7.0"), \
                "connection 501 was served (had the first ones timed out already?)"
            extra.close()
            # Every silent client hears 421 4.4.2 at the timeout and is closed.
            for c in silent:
                assert c.reply().startswith(b"421 4.4.2")
                with pytest.raises(ConnectionError):
                    c.line()
            # An asyncio connection costs the daemon a few kilobytes of Python objects and
            # buffers; 64 kB each (32 MiB) leaves room and still catches a buffer per client.
            grown = mem.grown_mib()
            assert grown < 32, f"500 connections: peak RSS grew {grown:.1f} MiB"
    finally:
        for c in silent:
            c.close()
    print(f"500 silent connections: peak RSS growth {grown:.1f} MiB")
    hostile.wait_for(lambda: _open_connections(hostile) == 0, 10, "every slot freed")
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)


def test_a_disconnect_mid_data_keeps_nothing_at_any_size(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    objects = hostile.root / "var" / "objects"
    before_ids = hostile.message_ids(agent["api_key"])
    before_raw = sorted(p.name for p in (objects / "raw").iterdir())
    aborted_before = len([e for e in hostile.events("smtp.transaction")
                          if e["result"] == "aborted"])
    body = b"Subject: cut\r\n\r\n" + (b"x" * 998 + b"\r\n") * 8000  # 8 MB, spooled to a file
    # A reset after 8 MB (spooled); a plain close after a whole message that lacks only
    # its end marker; a reset after a few bytes.
    cuts = [(body, True), (body[:500_000] + b"\r\n", False), (b"Subj", True)]
    for data, reset in cuts:
        c = Raw.in_data(hostile.smtp_port, "a@t.test")
        c.send(data)
        if reset:  # RST instead of FIN: SO_LINGER with a zero timeout
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    hostile.wait_for(lambda: len([e for e in hostile.events("smtp.transaction")
                                  if e["result"] == "aborted"]) == aborted_before + len(cuts),
                     10, "the aborted transactions")
    assert hostile.message_ids(agent["api_key"]) == before_ids
    assert sorted(p.name for p in (objects / "raw").iterdir()) == before_raw
    spool = objects / ".spool"
    hostile.wait_for(lambda: not spool.exists() or list(spool.iterdir()) == [], 5,
                     "the spool to empty")
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)


# --- slowloris: a fresh daemon with one connection slot ------------------------------------------

# Four bytes a second: slow enough that neither the 33-byte EHLO nor the DATA below ends within
# the daemon's timeout, and 1/125 of the rate DATA must average (policy.MIN_DATA_RATE).
TRICKLE_PACE_S = 0.25


class Dribble(threading.Thread):
    """Sends `data` a byte every TRICKLE_PACE_S until the daemon cuts the connection off;
    `sent` counts the bytes that went out."""

    def __init__(self, c: Raw, data: bytes) -> None:
        super().__init__(daemon=True)
        self.c, self.data = c, data
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        for byte in self.data:
            try:
                self.c.send(bytes([byte]))
            except OSError:
                return
            self.sent += 1
            if self.stop.wait(TRICKLE_PACE_S):  # the pace of the attack, not a wait for a state
                return


def test_a_client_trickling_bytes_is_cut_off_and_frees_its_slot(fresh_root: Path) -> None:
    """However many bytes still trickle, the client is cut off (the idle timer after a command,
    DATA's time budget while it streams: see test_data.py for its arithmetic)."""
    with running_daemon(fresh_root, smtp='timeout = "3s"\nmax_connections = 1') as d:
        key = d.add_agent("a", "a@t.test")["api_key"]
        for phase in ("command", "DATA"):
            d.wait_for(lambda: _open_connections(d) == 0, 10, "the slot free")
            if phase == "command":
                slow = Raw(d.smtp_port)
                assert slow.reply().startswith(b"220")
                data = b"EHLO a.very.slow.client.example\r\n"
            else:
                slow = Raw.in_data(d.smtp_port, "a@t.test")
                data = b"Subject: slow\r\n\r\n" + b"z" * 600
            dribble = Dribble(slow, data)
            dribble.start()
            try:
                # While it dribbles, it holds the only slot.
                refused = Raw(d.smtp_port)
                assert refused.reply().startswith(b"421 4.7.0")
                refused.close()
                cut = slow.reply()
                sent = dribble.sent
                assert cut.startswith(b"421 4.4.2"), cut
                assert sent < len(data), f"{phase}: cut off only after all {sent} bytes"
                with pytest.raises(ConnectionError):
                    slow.line()
            finally:
                dribble.stop.set()
                dribble.join(5)
                slow.close()
            # The freed slot serves a normal message.
            d.wait_for(lambda: _open_connections(d) == 0, 10, "the slot freed")
            _serves_normal_mail(d, key)
        with d.api(key) as api:
            assert len(api.get("/v1/messages").json()["messages"]) == 2  # the normal ones only
    figures.add("hostile inputs tried", 1)


def test_a_client_that_only_sends_noop_is_cut_off_after_100(
        hostile: Daemon, agent: dict[str, Any]) -> None:
    """A NOOP every few seconds resets the idle timer; the junk-command limit still ends it."""
    c = Raw(hostile.smtp_port)
    try:
        assert c.reply().startswith(b"220")
        c.send(b"EHLO c\r\n" + b"NOOP\r\n" * 101)
        assert c.reply().startswith(b"250")
        replies = [c.reply() for _ in range(101)]
        assert all(r.startswith(b"250") for r in replies[:100]), replies[:100]
        assert replies[100].startswith(b"421 4.7.0"), replies[100]
        c.sock.settimeout(10)
        assert c.sock.recv(1) == b""  # and the connection is closed
    finally:
        c.close()
    # A relay's long session is not junk: many transactions down one connection all deliver.
    with hostile.smtp() as s:
        s.ehlo("relay.example")
        for _ in range(120):
            s.mail("s@example.org")
            s.rcpt("a@t.test")
            code, _ = s.data(plain("a@t.test").as_bytes())
            assert code == 250
            s.rset()
    _serves_normal_mail(hostile, agent["api_key"])
    figures.add("hostile inputs tried", 1)
