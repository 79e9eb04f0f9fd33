"""OpenPGP through the real daemon (SPEC §8): keys in the directory, mail encrypted at rest and
decrypted by the client, PGP/MIME and armored files as they came, signatures checked, the
X-AgentMail-Attachments manifest, and gpg failing → 451, never a lost message.

Keys are made by the tests with the machine's gpg (tests/pgpkeys.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from daemon.client.http import Client, PostroomError
from tests.harness import Daemon, running_daemon
from tests.mail import plain, with_attachment
from tests.pgpkeys import TestKey, make_key


@pytest.fixture(scope="module")
def keys() -> dict[str, TestKey]:
    return {
        "ana": make_key("Ana <ana@agents.test>"),
        "bob": make_key("Bob <bob@agents.test>"),
        "eve": make_key("Eve <eve@elsewhere.test>"),
    }


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("postroom-pgp")) as d:
        yield d


def _key_file(d: Daemon, key: TestKey, name: str, private: bool = False) -> Path:
    path = d.root / f"{name}.asc"
    path.write_text(key.private if private else key.public)
    return path


def _add_keyed(d: Daemon, name: str, address: str, key: TestKey) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(d.cli("agent", "add", name, "--address", address,
                                           "--pgp-key", str(_key_file(d, key, name)),
                                           "--json").stdout)
    d.wait_for(lambda: d.rcpt_code(address) == 250, 5.0, f"RCPT of {address}")
    return out


@pytest.fixture(scope="module")
def ana(daemon: Daemon, keys: dict[str, TestKey]) -> dict[str, Any]:
    return _add_keyed(daemon, "ana", "ana@agents.test", keys["ana"])


@pytest.fixture(scope="module")
def bob(daemon: Daemon, keys: dict[str, TestKey]) -> dict[str, Any]:
    return _add_keyed(daemon, "bob", "bob@agents.test", keys["bob"])


@pytest.fixture(scope="module")
def cal(daemon: Daemon) -> dict[str, Any]:
    return daemon.add_agent("cal", "cal@agents.test")  # no key: mail stored as it arrives


def _stored_files(d: Daemon) -> list[Path]:
    root = d.root / "var" / "objects"
    return [p for p in root.rglob("*") if p.is_file() and ".spool" not in p.parts]


def test_cli_checks_keys_and_lists_fingerprints(daemon: Daemon, keys: dict[str, TestKey],
                                                ana: dict[str, Any]) -> None:
    assert ana["pgp_fingerprint"] == keys["ana"].fingerprint
    listed = {a["name"]: a for a in json.loads(daemon.cli("agent", "list", "--json").stdout)}
    assert listed["ana"]["pgp_fingerprint"] == keys["ana"].fingerprint
    assert keys["ana"].fingerprint in daemon.cli("agent", "list").stdout
    # Which rule each key breaks is tests/openpgp/test_gpg.py's to check (by reason code).
    refusals = {
        "private": _key_file(daemon, keys["eve"], "eve-private", private=True),
        "sign-only": _key_file(daemon, make_key("S <s@x.test>", sign_only=True), "s"),
        "expired": _key_file(daemon, make_key("X <x@x.test>", expired=True), "x"),
        "revoked": _key_file(daemon, make_key("R <r@x.test>", revoked=True), "r"),
    }
    for what, path in refusals.items():
        out = daemon.cli("agent", "add", f"k-{what}", "--address", f"{what}@k.test",
                         "--pgp-key", str(path), check=False)
        assert out.returncode == 1, (what, out.stdout, out.stderr)
        assert keys["eve"].private.splitlines()[3] not in out.stderr  # no key material echoed
    listed = {a["name"] for a in json.loads(daemon.cli("agent", "list", "--json").stdout)}
    assert not {f"k-{what}" for what in refusals} & listed
    garbage = daemon.root / "garbage.asc"
    garbage.write_text("hello")
    assert daemon.cli("agent", "set-pgp-key", "ana", str(garbage), check=False).returncode == 1
    assert json.loads(daemon.cli("agent", "list", "--json").stdout)[0]["pgp_fingerprint"] == \
        keys["ana"].fingerprint  # a refused key changes nothing


def test_encrypted_at_rest_round_trip(daemon: Daemon, keys: dict[str, TestKey],
                                      ana: dict[str, Any],
                                      request: pytest.FixtureRequest) -> None:
    secret = b"%PDF-1.4 quarterly numbers " + os.urandom(30_000) + b" SECRET-PAYLOAD"
    msg = with_attachment("ana@agents.test", secret, text="The body says PLAINTEXT-MARKER.")
    message_id = daemon.send(msg, ["ana@agents.test"])
    view = daemon.wait_message(ana["api_key"], message_id)
    assert view["status"] == "ready"
    assert view["encryption"] == {"algorithm": "openpgp", "format": "armored",
                                  "recipients": [keys["ana"].fingerprint]}
    assert view["text"].startswith("-----BEGIN PGP MESSAGE-----")
    assert view["body"]["text"]["encrypted"] is True
    (att,) = view["attachments"]
    assert att["encrypted"] is True
    assert att["encryption"] == {"algorithm": "openpgp", "format": "armored"}
    assert att["file_name"] == "report.pdf.asc"
    assert att["sha256"] == hashlib.sha256(secret).hexdigest()
    assert att["stored_sha256"] not in (None, att["sha256"])
    assert view["subject"] == "Quarterly report"  # headers of note stay readable

    # Nothing readable reached the store: not the body, not the attachment, not the raw.
    for path in _stored_files(daemon):
        data = path.read_bytes()
        assert b"PLAINTEXT-MARKER" not in data and b"SECRET-PAYLOAD" not in data, path
    with daemon.api(ana["api_key"]) as api:
        link = api.post(f"/v1/messages/{message_id}/attachments/0/download").json()
        raw = api.post(f"/v1/messages/{message_id}/raw/download").json()
    assert link["encrypted"] is True and link["content_type"] == "application/pgp-encrypted"
    assert link["stored_sha256"] == att["stored_sha256"]
    assert raw["file_name"] == f"{message_id}.eml.asc"

    client = Client(daemon.url, ana["api_key"])
    request.addfinalizer(client.close)
    sealed = client.fetch_message(message_id)  # without a key: as stored
    assert sealed["attachments"][0]["content"].startswith(b"-----BEGIN PGP MESSAGE-----")
    assert hashlib.sha256(sealed["attachments"][0]["content"]).hexdigest() == \
        att["stored_sha256"]
    for key in (keys["ana"].private, str(_key_file(daemon, keys["ana"], "ana-sk", True))):
        opened = client.fetch_message(message_id, decrypt_with=key)
        assert "PLAINTEXT-MARKER" in opened["text"]
        assert opened["attachments"][0]["content"] == secret
        assert opened["attachments"][0]["file_name"] == "report.pdf"
    with pytest.raises(PostroomError) as wrong:
        client.fetch_message(message_id, decrypt_with=keys["bob"].private)
    assert wrong.value.code == "decryption_failed"


def test_a_message_for_two_keyed_agents_is_encrypted_once_for_both(
        daemon: Daemon, keys: dict[str, TestKey], ana: dict[str, Any],
        bob: dict[str, Any]) -> None:
    payload = os.urandom(5000)
    message_id = daemon.send(with_attachment("ana@agents.test", payload),
                             ["ana@agents.test", "bob@agents.test"])
    for agent, key in ((ana, keys["ana"]), (bob, keys["bob"])):
        view = daemon.wait_message(agent["api_key"], message_id)
        assert sorted(view["encryption"]["recipients"]) == sorted(
            [keys["ana"].fingerprint, keys["bob"].fingerprint])
        with Client(daemon.url, agent["api_key"]) as client:
            opened = client.fetch_message(message_id, decrypt_with=key.private)
        assert opened["attachments"][0]["content"] == payload


def test_keyed_and_keyless_recipients_go_in_separate_transactions(
        daemon: Daemon, ana: dict[str, Any], cal: dict[str, Any]) -> None:
    with daemon.smtp() as s:
        s.ehlo("relay.example")
        s.mail("s@example.org")
        assert s.rcpt("ana@agents.test")[0] == 250
        # 452 with two recipients: not the recipient limit, but cal's mail is stored in the
        # clear and ana's encrypted, so the relay is asked to send cal's copy on its own.
        assert s.rcpt("cal@agents.test")[0] == 452
        assert s.data(plain("ana@agents.test").as_bytes())[0] == 250


def _pgp_mime_encrypted(sender: TestKey, to: TestKey, to_addr: str, body: bytes) -> bytes:
    sender.gpg("--import", input=to.public.encode())
    ciphertext = sender.gpg("--trust-model", "always", "--armor", "--encrypt",
                            "--recipient", to.fingerprint, input=body)
    return (f"From: {sender.uid}\r\nTo: {to_addr}\r\nSubject: sealed\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
            'boundary="enc"\r\n\r\n--enc\r\nContent-Type: application/pgp-encrypted\r\n\r\n'
            "Version: 1\r\n\r\n--enc\r\nContent-Type: application/octet-stream; "
            'name="encrypted.asc"\r\n\r\n').encode() + ciphertext.replace(b"\n", b"\r\n") + \
        b"\r\n--enc--\r\n"


def test_pgp_mime_from_another_agent_is_kept_as_it_came(
        daemon: Daemon, keys: dict[str, TestKey], ana: dict[str, Any],
        cal: dict[str, Any]) -> None:
    inner = b"Content-Type: text/plain\r\n\r\nthe real content\r\n"
    # To an agent without a key: stored exactly as it came, flagged.
    raw = _pgp_mime_encrypted(keys["bob"], keys["ana"], "cal@agents.test", inner)
    message_id = daemon.send(raw, ["cal@agents.test"])
    view = daemon.wait_message(cal["api_key"], message_id)
    assert view["pgp"] == "encrypted" and view["encryption"] is None
    (payload,) = [a for a in view["attachments"] if a["encrypted"]]
    assert payload["encryption"] == {"algorithm": "openpgp", "format": "armored"}
    assert payload["stored_sha256"] is None  # not encrypted again
    with Client(daemon.url, cal["api_key"]) as client:
        content = client.fetch_message(message_id)["attachments"]
    blob = next(a["content"] for a in content if a["encrypted"])
    assert keys["ana"].decrypt(blob) == inner

    # To ana, whose mail is encrypted at rest: the ciphertext payload is still not wrapped
    # again; ana's key opens it through the client.
    raw = _pgp_mime_encrypted(keys["bob"], keys["ana"], "ana@agents.test", inner)
    message_id = daemon.send(raw, ["ana@agents.test"])
    view = daemon.wait_message(ana["api_key"], message_id)
    (payload,) = [a for a in view["attachments"] if a["encrypted"] and
                  a["stored_sha256"] is None]
    with Client(daemon.url, ana["api_key"]) as client:
        opened = client.fetch_message(message_id, decrypt_with=keys["ana"].private)
    got = next(a for a in opened["attachments"] if a["index"] == payload["index"])
    assert got["decrypted"] is True and got["content"] == inner


def _signed(signer: TestKey, sender: str, to: str, content: bytes,
            tamper: bool = False) -> bytes:
    signature = signer.sign_detached(content)
    signed_part = content.replace(b"hello", b"HELLO") if tamper else content
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: signed\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/signed; micalg=pgp-sha256; '
            'protocol="application/pgp-signature"; boundary="sig"\r\n\r\n'
            "--sig\r\n").encode() + signed_part + (
            b"\r\n--sig\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\n"
            b"\r\n") + signature.replace(b"\n", b"\r\n") + b"\r\n--sig--\r\n"


CONTENT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello from bob\r\n"


@pytest.mark.parametrize(("signer", "tamper", "status"), [
    ("bob", False, "valid"), ("bob", True, "bad"), ("eve", False, "unknown_key")])
def test_signatures_from_a_keyed_agent_are_checked(
        daemon: Daemon, keys: dict[str, TestKey], bob: dict[str, Any], cal: dict[str, Any],
        signer: str, tamper: bool, status: str) -> None:
    raw = _signed(keys[signer], "Bob <bob@agents.test>", "cal@agents.test", CONTENT, tamper)
    view = daemon.wait_message(cal["api_key"], daemon.send(raw, ["cal@agents.test"]))
    assert view["pgp"] == "signed"
    assert view["signature"]["status"] == status
    if status != "unknown_key":
        assert view["signature"]["fingerprint"] == keys["bob"].fingerprint


def test_a_signature_from_a_stranger_is_not_checked_and_inline_signatures_are(
        daemon: Daemon, keys: dict[str, TestKey], bob: dict[str, Any],
        cal: dict[str, Any]) -> None:
    raw = _signed(keys["eve"], "Eve <eve@elsewhere.test>", "cal@agents.test", CONTENT)
    view = daemon.wait_message(cal["api_key"], daemon.send(raw, ["cal@agents.test"]))
    assert view["pgp"] == "signed" and view["signature"] is None
    clear = keys["bob"].clearsign(b"inline hello\n")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "bob@agents.test", "cal@agents.test", "inline"
    msg.set_content(clear.decode())
    view = daemon.wait_message(cal["api_key"], daemon.send(msg, ["cal@agents.test"]))
    assert view["pgp"] == "signed"
    assert view["signature"] == {"status": "valid", "fingerprint": keys["bob"].fingerprint}


def test_the_manifest_is_exposed_and_applied(daemon: Daemon, cal: dict[str, Any]) -> None:
    msg = with_attachment("cal@agents.test", b"-----BEGIN PGP MESSAGE-----\n\nxx\n"
                          b"-----END PGP MESSAGE-----\n", file_name="notes.txt.asc",
                          content_type="application/octet-stream")
    msg.add_attachment(b"plain", maintype="text", subtype="plain", filename="readme.txt")
    msg["X-AgentMail-Attachments"] = json.dumps([
        {"file_name": "notes.txt.asc", "content_type": "text/plain", "encrypted": True,
         "encryption": {"algorithm": "openpgp", "format": "armored"}},
        {"file_name": "readme.txt", "content_type": "text/plain", "encrypted": False}])
    view = daemon.wait_message(cal["api_key"], daemon.send(msg, ["cal@agents.test"]))
    assert [m["file_name"] for m in view["manifest"]] == ["notes.txt.asc", "readme.txt"]
    by_name = {a["file_name"]: a for a in view["attachments"]}
    assert by_name["notes.txt.asc"]["encrypted"] is True
    assert by_name["readme.txt"]["encrypted"] is False

    broken = with_attachment("cal@agents.test", b"x")
    broken["X-AgentMail-Attachments"] = "[{not json"
    view = daemon.wait_message(cal["api_key"], daemon.send(broken, ["cal@agents.test"]))
    assert view["status"] == "ready" and view["manifest"] is None
    assert any("x-agentmail-attachments" in d for d in view["defects"])


def test_gpg_missing_or_hanging_answers_451_and_keyless_mail_flows(
        fresh_root: Path, keys: dict[str, TestKey]) -> None:
    with running_daemon(fresh_root) as d:  # agents made while gpg works
        dan = _add_keyed(d, "dan", "dan@agents.test", keys["ana"])
        flo = d.add_agent("flo", "flo@agents.test")
    hang = fresh_root / "slow-gpg"
    hang.write_text("#!/bin/sh\nsleep 60\n")
    hang.chmod(hang.stat().st_mode | stat.S_IXUSR)
    for gpg in ("/nonexistent/gpg", str(hang)):
        section = f'[encryption]\ngpg = "{gpg}"\ngpg_timeout = "2s"\n'
        with running_daemon(fresh_root, extra=section, pipeline="max_attempts = 2") as d:
            code, text = d.try_send(with_attachment("dan@agents.test", b"x").as_bytes(),
                                    "dan@agents.test")
            assert code == 451, (gpg, code, text)
            sent = d.send(plain("flo@agents.test"), ["flo@agents.test"])
            assert d.wait_message(flo["api_key"], sent)["status"] == "ready"
            assert d.wait_for(lambda: d.events("openpgp.unavailable"), 10, "the warning")
        if gpg.startswith("/nonexistent"):
            continue
        # A signature that cannot be checked is retried, then recorded unchecked, not failed.
        with running_daemon(fresh_root, extra=section, pipeline="max_attempts = 2") as d:
            raw = _signed(keys["ana"], "dan@agents.test", "flo@agents.test", CONTENT)
            view = d.wait_message(flo["api_key"], d.send(raw, ["flo@agents.test"]), 30)
            assert view["status"] == "ready" and view["signature"] is None
            assert any(x.startswith("signature: not checked") for x in view["defects"])
    # gpg back: the relay's retry is accepted and readable by the key's owner.
    with running_daemon(fresh_root) as d:
        sent = d.send(with_attachment("dan@agents.test", b"retried"), ["dan@agents.test"])
        with Client(d.url, dan["api_key"]) as client:
            opened = client.fetch_message(sent, decrypt_with=keys["ana"].private)
        assert opened["attachments"][0]["content"] == b"retried"
    assert not list((fresh_root / "var" / "objects" / ".spool").iterdir())


def test_required_refuses_keyless_agents_and_off_stores_plaintext(
        fresh_root: Path, keys: dict[str, TestKey]) -> None:
    with running_daemon(fresh_root, extra='[encryption]\nat_rest = "required"\n') as d:
        d.cli("agent", "add", "gil", "--address", "gil@agents.test")
        d.cli("agent", "add", "hua", "--address", "hua@agents.test", "--pgp-key",
              str(_key_file(d, keys["bob"], "hua")))
        d.wait_for(lambda: d.rcpt_code("hua@agents.test") == 250, 5, "hua")
        assert d.rcpt_code("gil@agents.test") == 550
    off = fresh_root.parent / "off"
    with running_daemon(off, extra='[encryption]\nat_rest = "off"\n') as d:
        agent = _add_keyed(d, "ivo", "ivo@agents.test", keys["bob"])
        view = d.wait_message(agent["api_key"], d.send(
            with_attachment("ivo@agents.test", b"open"), ["ivo@agents.test"]))
        assert view["encryption"] is None and view["attachments"][0]["encrypted"] is False


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_check_config_reports_gpg_and_a_40_mib_attachment_is_encrypted_in_bounded_memory(
        fresh_root: Path, keys: dict[str, TestKey]) -> None:
    smtp = 'max_message_size = "80MiB"'
    with running_daemon(fresh_root, smtp=smtp) as d:
        report = json.loads(d.cli("check-config", "--json").stdout)
        assert report["gpg"].startswith("2.") and report["encryption"] == "when_key"
        agent = _add_keyed(d, "jan", "jan@agents.test", keys["ana"])
        big = os.urandom(40 * 1024 * 1024)
        before = _peak_rss_kib(d.proc.pid)
        message_id = d.send(with_attachment("jan@agents.test", big, file_name="big.bin",
                                            content_type="application/octet-stream"),
                            ["jan@agents.test"])
        grown_mib = (_peak_rss_kib(d.proc.pid) - before) / 1024
        view = d.wait_message(agent["api_key"], message_id, 120)
        assert view["attachments"][0]["sha256"] == hashlib.sha256(big).hexdigest()
        with Client(d.url, agent["api_key"]) as client:
            opened = client.fetch_message(message_id, decrypt_with=keys["ana"].private)
        assert opened["attachments"][0]["content"] == big
        # The daemon never held the message (55 MiB as base64) or the attachment whole: it
        # streamed DATA to a spool file, and gpg encrypted file to file.
        print(f"\n40 MiB encrypted at rest: daemon peak RSS grew {grown_mib:.1f} MiB")
        assert grown_mib < 40, grown_mib
