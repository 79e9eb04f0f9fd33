"""No name from a message or an upload reaches a path or an object key (issue 9 item 5).

Attachments named `../../etc/passwd`, `/etc/passwd`, Windows paths and device names, names with
NUL, control and bidi characters, 4 kB names (RFC 2231 continuations too) are delivered over
SMTP, and agents upload files under the same names by all three flows. Then the daemon's whole
directory is walked: every file is one the daemon owns or an object under the store root with a
key of SPEC §5's layout, and the parent directory gained nothing. The API's `file_name` is safe,
`original_file_name` keeps what was sent, and downloads carry a well-formed Content-Disposition.
The signed-URL route refuses escaping keys (the store's own refusals:
tests/storage/test_signing.py).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import httpx
import pytest

from storage.presign import SignedGet, UrlSigner
from tests import figures
from tests.harness import Daemon, running_daemon


def _hostile() -> None:
    figures.add("hostile inputs tried", 1)


def _pct(name: str) -> str:
    return quote(name.encode("utf-8"), safe="")


def _rfc2231(name: str) -> str:
    return f"attachment; filename*=utf-8''{_pct(name)}"


def _continued(name: str, size: int = 100) -> str:
    """RFC 2231 continuations: `filename*0*=utf-8''…; filename*1*=…`, one segment a line."""
    pieces = [name[i:i + size] for i in range(0, len(name), size)]
    segs = [f"filename*{i}*={'utf-8' + chr(39) * 2 if i == 0 else ''}{_pct(p)}"
            for i, p in enumerate(pieces)]
    return "attachment;\r\n " + ";\r\n ".join(segs)


LONG = "A" * 4096 + ".pdf"
LONG_UTF8 = "é" * 2100 + ".txt"  # 4.2 kB of two-byte characters
LONG_CLIMB = "../" * 1400 + "deep.txt"

# (how the part names itself: Content-Disposition value, the name as sent once decoded).
# None as the name: a decoding the SPEC leaves open (a bare backslash in a quoted string).
NAMES: list[tuple[str, str | None]] = [
    ('attachment; filename="../../etc/passwd"', "../../etc/passwd"),
    ('attachment; filename="/etc/passwd"', "/etc/passwd"),
    (_rfc2231("C:\\Windows\\system32\\x.dll"), "C:\\Windows\\system32\\x.dll"),
    ('attachment; filename="C:\\Windows\\system32\\y.dll"', None),
    (_rfc2231("..\\..\\x"), "..\\..\\x"),
    (_rfc2231("\\\\server\\share\\unc.txt"), "\\\\server\\share\\unc.txt"),
    (_rfc2231("/"), "/"),
    (_rfc2231("a/"), "a/"),
    ("attachment; filename=\"=?utf-8?b?Li4vLi4vZW5jb2RlZC9wYXNzd2Q=?=\"", "../../encoded/passwd"),
    (_rfc2231("a\x00b.txt"), "a\x00b.txt"),
    (_rfc2231("nul\x00../../x.txt"), "nul\x00../../x.txt"),
    (_rfc2231("c\x01\x07\x1b[31mtrl\x7f.txt"), "c\x01\x07\x1b[31mtrl\x7f.txt"),
    (_rfc2231("tab\there.txt"), "tab\there.txt"),
    ("attachment; filename=\"=?utf-8?q?line=0D=0AX-Injected=3A_1.txt?=\"",
     "line\r\nX-Injected: 1.txt"),
    (_rfc2231("nel\u0085ls\u2028ps\u2029.txt"), "nel\u0085ls\u2028ps\u2029.txt"),
    (f'attachment; filename="{LONG}"', LONG),
    (_continued(LONG), LONG),
    (_continued(LONG_UTF8), LONG_UTF8),
    (_continued(LONG_CLIMB), LONG_CLIMB),
    ('attachment; filename="CON"', "CON"),
    ('attachment; filename="nul.txt"', "nul.txt"),
    ('attachment; filename="COM1"', "COM1"),
    ('attachment; filename="LPT9.log"', "LPT9.log"),
    ('attachment; filename="aux"', "aux"),
    ('attachment; filename="CON .txt"', "CON .txt"),
    ('attachment; filename="Con.tar.gz"', "Con.tar.gz"),
    ('attachment; filename="prn."', "prn."),
    ('attachment; filename="CONIN$"', "CONIN$"),
    (_rfc2231("COM\u00b9.txt"), "COM\u00b9.txt"),
    ('attachment; filename="report.pdf..."', "report.pdf..."),
    ('attachment; filename="report.pdf   "', "report.pdf   "),
    ('attachment; filename="evil.exe. . ."', "evil.exe. . ."),
    ('attachment; filename=".."', ".."),
    ('attachment; filename="."', "."),
    ('attachment; filename="..."', "..."),
    ('attachment; filename=""', ""),
    ('attachment; filename="a:stream.txt"', "a:stream.txt"),
    ('attachment; filename="a|b?c*d<e>.txt"', "a|b?c*d<e>.txt"),
    (_rfc2231("invoice\u202efdp.exe"), "invoice\u202efdp.exe"),
    (_rfc2231("\u2066iso\u2069late\u200f.txt"), "\u2066iso\u2069late\u200f.txt"),
    (_rfc2231("zero\u200bwidth\ufeff.txt"), "zero\u200bwidth\ufeff.txt"),
    (_rfc2231("\uff0e\uff0e\uff0fwide\uff3cslash.txt"), "\uff0e\uff0e\uff0fwide\uff3cslash.txt"),
    ('attachment; filename="%2e%2e%2fpct.txt"', "%2e%2e%2fpct.txt"),
]
# Names that only a Content-Type `name=` carries.
CT_NAMES: list[tuple[str, str]] = [
    ('application/octet-stream; name="../../ct/passwd"', "../../ct/passwd"),
    ("application/octet-stream; name*=utf-8''%2Fabs%00olute", "/abs\x00olute"),
]
# The same names for uploads: what agents may ask for by name.
UPLOAD_NAMES = sorted({n for _, n in NAMES if n is not None} | {
    "CON", "nul.txt", "COM1", "LPT9.log", "aux", "a.txt.", "a.txt ", "con:x.txt"})

_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{d}{n}" for d in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
_ID = r"[0-9a-z]{26}"
STORE_KEY = re.compile(
    rf"raw/msg_{_ID}\.eml|inbound/msg_{_ID}/(\d+|\d+\.txt|body\.txt|body\.html|extracted\.txt)"
    rf"|uploads/agt_{_ID}/[0-9a-f]{{32}}-[A-Za-z0-9_][A-Za-z0-9_.\-]{{0,99}}")
STORE_DIR = re.compile(rf"|raw|inbound|inbound/msg_{_ID}|uploads|uploads/agt_{_ID}|\.spool")
# What the daemon keeps outside the store: its config, database, signing key, keyring.
OWN_FILES = re.compile(r"config\.toml|\.test-database-url|var/postroom\.db(-wal|-shm|-journal)?"
                       r"|var/signing\.key|var/gnupg(/[A-Za-z0-9_.~#\-]+)*")
OWN_DIRS = re.compile(r"var|var/objects|var/gnupg(/[A-Za-z0-9_.~#\-]+)*")


def unsafe_reasons(name: str) -> list[str]:
    """Why `name` is not a safe file name (empty: it is safe)."""
    why = []
    if not name or name in (".", ".."):
        why.append("empty or a dot name")
    if "/" in name or "\\" in name:
        why.append("a path separator")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name):
        why.append("a control, format or separator character")
    if len(name.encode("utf-8")) > 255:
        why.append("over 255 bytes of UTF-8")
    if name != name.rstrip(". "):
        why.append("a trailing dot or space")
    if name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        why.append("a Windows device name")
    if re.search(r'[<>:"|?*]', name):
        why.append("a character Windows refuses")
    return why


_DISPOSITION = re.compile(
    r"attachment; filename=\"([^\"\\]*)\"; filename\*=UTF-8''([A-Za-z0-9%._~-]+)")


def check_download(url: str, file_name: str, data: bytes) -> None:
    """The URL serves `data` with a Content-Disposition that is well-formed and says
    `file_name`."""
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.content == data
    header = r.headers["content-disposition"]
    m = _DISPOSITION.fullmatch(header)
    assert m, header
    fallback, encoded = m.groups()
    assert all(32 <= ord(c) < 127 and c not in ';%' for c in fallback), header
    assert unquote(encoded, errors="strict") == file_name


@dataclass
class Sent:
    payload: bytes
    header: str
    name: str | None


def _message(to: str, parts: list[tuple[str, str, bytes]]) -> bytes:
    """A multipart/mixed message with a text body and one part per (Content-Type,
    Content-Disposition or "", payload)."""
    boundary = "b-" + secrets.token_hex(8)
    out = [f"From: s@example.org\r\nTo: {to}\r\nSubject: names\r\n"
           f"Message-ID: <{secrets.token_hex(8)}@example.org>\r\nMIME-Version: 1.0\r\n"
           f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
           f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nnames\r\n"]
    for ctype, disposition, payload in parts:
        head = f"Content-Type: {ctype}\r\n"
        if disposition:
            head += f"Content-Disposition: {disposition}\r\n"
        out.append(f"--{boundary}\r\n{head}\r\n{payload.decode('ascii')}\r\n")
    out.append(f"--{boundary}--\r\n")
    return "".join(out).encode("utf-8")


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, dict[str, Any]]]:
    parent = tmp_path_factory.mktemp("fs-safety")
    before = sorted(p.name for p in parent.iterdir())
    with running_daemon(parent / "daemon") as d:
        yield d, d.add_agent("ann", "ann@fs.test")
        d_root = d.root
    # Nothing appeared next to the daemon's directory, whatever the names said.
    assert sorted(p.name for p in parent.iterdir()) == sorted([*before, d_root.name])


def test_hostile_attachment_names_are_made_safe_and_kept_as_sent(
        fs: tuple[Daemon, dict[str, Any]]) -> None:
    d, ann = fs
    sent = [Sent(f"payload-{i}-{secrets.token_hex(4)}".encode(), h, n)
            for i, (h, n) in enumerate(NAMES)]
    parts = [("application/octet-stream", s.header, s.payload) for s in sent]
    parts += [(ct, "", f"ct-{i}-{secrets.token_hex(4)}".encode())
              for i, (ct, _) in enumerate(CT_NAMES)]
    sent += [Sent(p[2], p[0], n) for p, (_, n) in zip(parts[len(NAMES):], CT_NAMES, strict=True)]
    mid = d.send(_message("ann@fs.test", parts), ["ann@fs.test"])
    msg = d.wait_message(ann["api_key"], mid, timeout=60)
    atts = msg["attachments"]
    assert len(atts) == len(sent), [a["file_name"] for a in atts]
    with d.api(ann["api_key"]) as api:
        for s, att in zip(sent, atts, strict=True):
            assert att["status"] == "ready", att
            assert not unsafe_reasons(att["file_name"]), (s.header[:80], att["file_name"],
                                                          unsafe_reasons(att["file_name"]))
            if s.name is not None:
                kept = att["original_file_name"]
                if "\x00" in s.name and kept == s.name.replace("\x00", "\ufffd"):
                    # A NUL cannot be stored in a text column (PostgreSQL): it is replaced,
                    # and the part says so; the raw message keeps the bytes as sent.
                    assert any("NUL" in defect for defect in att["defects"]), att
                else:
                    assert kept == (s.name or None), s.header[:80]
            r = api.post(f"/v1/messages/{mid}/attachments/{att['index']}/download")
            assert r.status_code == 200, r.text
            assert r.json()["file_name"] == att["file_name"]
            check_download(r.json()["url"], att["file_name"], s.payload)
            _hostile()


def test_a_name_with_a_raw_nul_byte_in_the_header_is_made_safe(
        fs: tuple[Daemon, dict[str, Any]]) -> None:
    d, ann = fs
    raw = _message("ann@fs.test", [("application/octet-stream",
                                    'attachment; filename="../nul\x00byte\x01.txt"', b"nul")])
    mid = d.send(raw, ["ann@fs.test"])
    [att] = d.wait_message(ann["api_key"], mid)["attachments"]
    assert not unsafe_reasons(att["file_name"]), att["file_name"]
    assert "byte" in att["file_name"]
    _hostile()


def _upload_with(client: httpx.Client, flow: str, name: str, data: bytes
                 ) -> dict[str, Any] | None:
    """Upload `data` named `name` by `flow`; the upload object, or None if refused (4xx)."""
    if flow == "direct":
        boundary = "x" + secrets.token_hex(8)
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        if any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name) > 2000:
            disposition = f"form-data; name=\"file\"; filename*=utf-8''{_pct(name)}"
        else:
            disposition = f'form-data; name="file"; filename="{quoted}"'
        body = (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + (
                    f"\r\n--{boundary}--\r\n").encode()
        r = client.post("/v1/uploads", content=body,
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 201, (name, r.text)
        return dict(r.json())
    path = "/v1/uploads/form" if flow == "form" else "/v1/uploads/url"
    body = {"file_name": name, "content_type": "application/octet-stream"}
    body |= {"max_bytes": 1000} if flow == "form" else {"size": len(data)}
    r = client.post(path, json=body)
    if r.status_code == 422:
        assert set(r.json()["error"]) == {"code", "message"}
        return None
    assert r.status_code == 200, (name, r.text)
    issued = r.json()
    if flow == "form":
        fields = {k: v for k, v in issued["upload"].items() if k != "url"}
        sent = httpx.post(issued["upload"]["url"], data=fields,
                          files={"file": ("f", data, "application/octet-stream")})
        assert sent.status_code == 204, sent.text
    else:
        sent = httpx.put(issued["upload_url"], content=data,
                         headers={"Content-Type": "application/octet-stream"})
        assert sent.status_code == 200, sent.text
    got = client.get(f"/v1/attachments/{issued['id']}")
    assert got.status_code == 200, got.text
    return dict(got.json())


@pytest.mark.parametrize("flow", ["form", "url", "direct"])
def test_hostile_upload_names_never_reach_a_key_or_an_unsafe_file_name(
        fs: tuple[Daemon, dict[str, Any]], flow: str) -> None:
    d, ann = fs
    prefix = f"uploads/{ann['id']}/"
    with d.api(ann["api_key"]) as api:
        for name in UPLOAD_NAMES:
            data = secrets.token_bytes(64)
            obj = _upload_with(api, flow, name, data)
            _hostile()
            if obj is None:  # refused with the error body: nothing stored under that name
                continue
            key = obj["object_key"]
            assert key.startswith(prefix) and STORE_KEY.fullmatch(key), (name, key)
            assert obj["status"] == "ready" and obj["url"], obj
            assert not unsafe_reasons(obj["file_name"]), (flow, name, obj["file_name"],
                                                          unsafe_reasons(obj["file_name"]))
            check_download(obj["url"], obj["file_name"], data)


def test_the_daemon_directory_holds_only_its_own_files_and_layout_keys(
        fs: tuple[Daemon, dict[str, Any]]) -> None:
    d, _ = fs
    store = d.root / "var" / "objects"
    markers = ("passwd", "Windows", "system32", "LPT9", "COM1", "CONIN", "evil", "invoice",
               "injected", "Injected", "server", "share", "wide", "stream", "AAAAAAAA", "éé",
               "deep", "pct", "iso", "late", "zero", "\x00", "\\", ":")
    files = dirs = 0
    for folder, subdirs, names in os.walk(d.root, followlinks=False):
        here = Path(folder)
        for name in subdirs + names:
            path = here / name
            rel = path.relative_to(d.root).as_posix()
            assert not path.is_symlink(), rel
            if path.is_dir():
                dirs += 1
                inside = path.relative_to(store).as_posix() if path.is_relative_to(store) else None
                assert (OWN_DIRS.fullmatch(rel)
                        or (inside is not None and STORE_DIR.fullmatch(inside))), rel
            else:
                files += 1
                if path.is_relative_to(store):
                    key = path.relative_to(store).as_posix()
                    assert STORE_KEY.fullmatch(key), key
                    if not key.startswith("uploads/"):  # only upload keys carry a (slugged) name
                        assert not any(m in key for m in markers), key
                else:
                    assert OWN_FILES.fullmatch(rel), rel
    assert files > len(NAMES) and dirs >= 5
    assert list((store / ".spool").iterdir()) == []
    _hostile()


def _raw_get(d: Daemon, target: str) -> tuple[int, bytes]:
    """GET `target` exactly as written (no client-side normalising of dots or escapes)."""
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""


def test_escaping_keys_on_the_signed_url_route_never_serve_a_file_outside(
        fs: tuple[Daemon, dict[str, Any]]) -> None:
    d, ann = fs
    mid = d.send(_message("ann@fs.test", [("text/plain", "attachment; filename=a.txt",
                                           b"inside")]), ["ann@fs.test"])
    d.wait_message(ann["api_key"], mid)
    with d.api(ann["api_key"]) as api:
        url = api.post(f"/v1/messages/{mid}/attachments/0/download").json()["url"]
    query = urlsplit(url).query
    outside = d.root / "outside.txt"
    outside.write_text("OUTSIDE-SECRET")
    passwd = Path("/etc/passwd").read_bytes()[:16]
    targets = [
        "/objects/..%2F..%2Fetc%2Fpasswd", "/objects/../../etc/passwd",
        "/objects/%2E%2E/%2E%2E/etc/passwd", "/objects/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/objects//etc/passwd", "/objects/%2Fetc%2Fpasswd",
        "/objects/inbound/..%2F..%2F..%2Foutside.txt", "/objects/..%2F..%2Foutside.txt",
        "/objects/..%5C..%5Coutside.txt", "/objects/raw/%00", "/objects/raw%00/x",
        f"/objects/inbound/{mid}/0%2F..%2F..%2F..%2F..%2Foutside.txt",
        f"/objects/inbound/{mid}/..%2F..%2F..%2F..%2Foutside.txt",
        "/objects/." + "/.." * 12 + "/etc/passwd",
    ]
    for target in targets:
        for q in (query, query.replace("sig=", "sig=x")):
            status, body = _raw_get(d, f"{target}?{q}")
            assert status in (400, 403, 404), (target, status, body[:200])
            assert b"OUTSIDE-SECRET" not in body and passwd not in body, target
            _hostile()
    # Defence in depth: even a URL truly signed (with the daemon's own key, as if it leaked)
    # for an escaping key, or for a key through a symlink planted in the store, serves nothing.
    signer = UrlSigner((d.root / "var" / "signing.key").read_bytes().strip())
    store = d.root / "var" / "objects"
    (store / "inbound" / "msg_planted").symlink_to(d.root, target_is_directory=True)
    (store / "raw" / "msg_planted.eml").symlink_to(outside)
    try:
        for key in ("../../outside.txt", "inbound/../../../outside.txt", "/etc/passwd",
                    "inbound/msg_planted/outside.txt", "raw/msg_planted.eml"):
            params = signer.sign(SignedGet(key, int(time.time()) + 60, "x.txt", "text/plain"))
            status, body = _raw_get(d, f"/objects/{quote(key, safe='')}?{urlencode(params)}")
            assert status in (400, 403, 404), (key, status, body[:200])
            assert b"OUTSIDE-SECRET" not in body and passwd not in body, key
            _hostile()
    finally:
        (store / "inbound" / "msg_planted").unlink()
        (store / "raw" / "msg_planted.eml").unlink()
        outside.unlink()
