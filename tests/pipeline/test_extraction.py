"""What agents see of hard parts: rejected by policy, undecodable, nested, nameless."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.harness import Raw, queued_id, running_daemon
from tests.mail import with_attachment

BAD_BASE64 = (
    b"From: s@example.org\r\nTo: a@t.test\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain\r\n\r\nbody text\r\n"
    b"--XX\r\nContent-Type: application/pdf; name=a.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n!!!! not base64 at all ****\r\n\x00\xff\r\n"
    b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\naGVsbG8=\r\n--XX--\r\n"
)


def test_oversized_part_is_rejected_and_the_rest_kept(fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra='[limits]\nmax_attachment_size = "10kB"') as d:
        agent = d.add_agent("a", "a@t.test")
        msg = with_attachment("a@t.test", os.urandom(50_000), file_name="big.bin",
                              content_type="application/octet-stream")
        msg.add_attachment(b"small one", maintype="text", subtype="plain", filename="s.txt")
        msg_id = d.send(msg, ["a@t.test"])
        m = d.wait_message(agent["api_key"], msg_id)
        assert m["status"] == "partial"
        big, small = m["attachments"]
        assert (big["status"], big["error"]) == ("rejected", "too_large")
        assert small["status"] == "ready" and small["file_name"] == "s.txt"
        with d.api(agent["api_key"]) as api:
            r = api.post(f"/v1/messages/{msg_id}/attachments/0/download")
            assert r.status_code == 409 and r.json()["error"]["code"] == "not_ready"
            assert api.post(f"/v1/messages/{msg_id}/attachments/1/download").status_code == 200
        d.wait_for(lambda: [e for e in d.events("attachment.state") if e["status"] == "rejected"],
                   10, "the rejection logged")


def test_undecodable_part_is_recorded_never_dropped(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        agent = d.add_agent("a", "a@t.test")
        msg_id = d.send(BAD_BASE64, ["a@t.test"])
        m = d.wait_message(agent["api_key"], msg_id)
        assert m["text"].startswith("body text")
        names = [a["file_name"] for a in m["attachments"]]
        assert len(m["attachments"]) == 2, names
        broken = m["attachments"][0]
        assert broken["file_name"] == "a.pdf"
        # Lenient base64: the garbage is skipped, the part is kept, and the defect is recorded.
        assert broken["status"] == "ready", broken
        assert any("base64" in defect for defect in broken["defects"]), broken
        ok = m["attachments"][1]
        assert ok["status"] == "ready" and ok["size"] == 5
        assert ok["file_name"].startswith("part-1")


def test_nested_message_is_listed_with_its_own_attachment(fresh_root: Path) -> None:
    inner = with_attachment("x@example.org", b"inner bytes", file_name="inner.txt",
                            content_type="text/plain", subject="Forwarded thing")
    outer = with_attachment("a@t.test", b"%PDF-1.4 outer", file_name="outer.pdf")
    outer.add_attachment(inner)
    with running_daemon(fresh_root) as d:
        agent = d.add_agent("a", "a@t.test")
        m = d.wait_message(agent["api_key"], d.send(outer, ["a@t.test"]))
        atts = m["attachments"]
        assert [a["file_name"] for a in atts][:2] == ["outer.pdf", "Forwarded thing.eml"]
        eml = atts[1]
        assert eml["content_type"] == "message/rfc822"
        child = next(a for a in atts if a["file_name"] == "inner.txt")
        assert child["parent"] == eml["index"]
        assert child["path"].startswith(eml["path"] + ".")
        assert m["status"] == "ready"


def test_sigterm_lets_a_transfer_in_progress_finish(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        agent = d.add_agent("a", "a@t.test")
        idle = Raw(d.smtp_port)
        assert idle.reply().startswith(b"220")
        idle.send(b"EHLO idle\r\n")
        assert idle.reply().startswith(b"250")
        c = Raw.in_data(d.smtp_port, "a@t.test")
        c.send(b"Subject: in flight\r\n\r\n" + b"x" * 100_000 + b"\r\n")
        d.wait_for(lambda: d.proc.poll() is None, 1)
        stopper = threading.Thread(target=d.proc.terminate)
        stopper.start()
        d.wait_for(lambda: d.events("daemon.stopping"), 10, "drain to start")
        try:
            late: Raw | None = Raw(d.smtp_port)
        except OSError:
            late = None  # the listener is already closed: also a refusal
        if late is not None:
            refused = late.reply()
            assert refused.startswith(b"421"), refused
            late.close()
        idle.send(b"MAIL FROM:<s@example.org>\r\n")  # no new transaction during the drain
        assert idle.reply().startswith(b"421 4.3.2")
        idle.close()
        c.send(b"y" * 1000 + b"\r\n.\r\n")
        reply = c.reply()
        assert reply.startswith(b"250 2.0.0"), reply
        c.close()
        stopper.join()
        assert d.proc.wait(30) == 0
        d2_id = queued_id(reply)
    # The message accepted during the drain is there after a restart.
    with running_daemon(fresh_root) as d2:
        assert d2.wait_message(agent["api_key"], d2_id)["status"] == "ready"


PGP_ENCRYPTED = (
    b"From: s@example.org\r\nTo: a@t.test\r\nSubject: secret\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary=P\r\n'
    b"\r\n--P\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
    b'--P\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
    b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA1234\r\n-----END PGP MESSAGE-----\r\n--P--\r\n"
)


def test_pgp_mime_message_lists_its_ciphertext_flagged_encrypted(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        agent = d.add_agent("a", "a@t.test")
        m = d.wait_message(agent["api_key"], d.send(PGP_ENCRYPTED, ["a@t.test"]))
        assert (m["pgp"], m["smime"], m["status"]) == ("encrypted", None, "ready")
        control, payload = m["attachments"]
        assert control["encrypted"] is False
        assert payload["encrypted"] is True and payload["file_name"] == "encrypted.asc"
        assert payload["detected_content_type"] == "application/pgp-encrypted"


TNEF_DIR = Path(__file__).parents[2].parent / "shared" / "corpus" / "tnef"


@pytest.mark.skipif(not TNEF_DIR.is_dir() and not os.environ.get("CI"),
                    reason=f"the shared TNEF corpus is not at {TNEF_DIR}")
def test_winmail_dat_files_are_listed_with_the_tnef_part_as_parent(fresh_root: Path) -> None:
    payload = (TNEF_DIR / "mimekit" / "two-files.tnef").read_bytes()
    msg = with_attachment("a@t.test", payload, file_name="winmail.dat",
                          content_type="application/ms-tnef")
    with running_daemon(fresh_root) as d:
        agent = d.add_agent("a", "a@t.test")
        m = d.wait_message(agent["api_key"], d.send(msg, ["a@t.test"]))
        assert m["status"] == "ready"
        tnef, *inner = m["attachments"]
        assert (tnef["file_name"], tnef["source"]) == ("winmail.dat", "mime")
        assert [(a["file_name"], a["source"], a["parent"]) for a in inner] == [
            ("AUTHORS", "tnef", tnef["index"]), ("README", "tnef", tnef["index"])]
        assert all(a["status"] == "ready" and a["size"] > 0 for a in inner)
