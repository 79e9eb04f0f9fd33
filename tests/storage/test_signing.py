"""Signed local-store URLs, object keys and download headers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from storage.errors import InvalidKey
from storage.objects import attachment_key, body_key, check_key, raw_key
from storage.presign import SignedGet, UrlSigner, content_disposition, download_content_type

SIGNER = UrlSigner(b"k" * 32)


def _signed(expires: int) -> tuple[SignedGet, dict[str, str]]:
    g = SignedGet("inbound/msg_1/0", expires, "Résumé.pdf", "application/pdf")
    return g, SIGNER.sign(g)


def test_a_valid_signature_verifies_and_round_trips_the_fields() -> None:
    g, params = _signed(int(time.time()) + 60)
    assert SIGNER.verify("inbound/msg_1/0", params) == g


@pytest.mark.parametrize("field", ["exp", "fn", "ct", "sig"])
def test_changing_any_field_breaks_the_signature(field: str) -> None:
    _, params = _signed(int(time.time()) + 60)
    changed = dict(params)
    changed[field] = changed[field][:-1] + ("A" if not changed[field].endswith("A") else "B")
    assert SIGNER.verify("inbound/msg_1/0", changed) is None


def test_the_key_method_and_secret_are_bound() -> None:
    _, params = _signed(int(time.time()) + 60)
    assert SIGNER.verify("inbound/msg_1/1", params) is None
    assert SIGNER.verify("inbound/msg_1/0", params, method="PUT") is None
    assert UrlSigner(b"j" * 32).verify("inbound/msg_1/0", params) is None


def test_expired_and_malformed_urls_are_refused() -> None:
    _, params = _signed(int(time.time()) - 1)
    assert SIGNER.verify("inbound/msg_1/0", params) is None
    assert SIGNER.verify("inbound/msg_1/0", {}) is None
    assert SIGNER.verify("inbound/msg_1/0", {"exp": "x", "fn": "!", "ct": "", "sig": ""}) is None


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        UrlSigner(b"short")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../b", "a//b", "", "a/./b",
                                 "inbound/x/\x00", "name with space", "x" * 1000, ".hidden"])
def test_keys_that_could_escape_or_are_not_ours_are_refused(key: str) -> None:
    with pytest.raises(InvalidKey):
        check_key(key)


def test_our_keys_are_valid() -> None:
    for key in (raw_key("msg_01"), attachment_key("msg_01", 3), body_key("msg_01", "text"),
                body_key("msg_01", "html")):
        assert check_key(key) == key
    assert raw_key("m") == "raw/m.eml"
    assert attachment_key("m", 2) == "inbound/m/2"
    assert body_key("m", "html") == "inbound/m/body.html"


@pytest.mark.parametrize(("declared", "served"), [
    ("application/pdf", "application/pdf"), ("image/png", "image/png"),
    ("text/html", "application/octet-stream"), ("image/svg+xml", "application/octet-stream"),
    ("application/javascript", "application/octet-stream"),
    ("application/xhtml+xml", "application/octet-stream"),
    ("TEXT/HTML; charset=utf-8", "application/octet-stream"),
    ("garbage", "application/octet-stream"), (None, "application/octet-stream"),
    ("text/plain", "text/plain"),
])
def test_active_types_are_served_as_octet_stream(declared: str | None, served: str) -> None:
    assert download_content_type(declared) == served


def test_content_disposition_carries_the_utf8_name_and_an_ascii_fallback() -> None:
    h = content_disposition('Résumé "final";.pdf')
    assert h.startswith('attachment; filename="R_sum_ _final__.pdf"')
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%20%22final%22%3B.pdf" in h


async def test_local_store_paths_stay_under_the_root_and_readiness_is_concurrent(
        tmp_path: Path) -> None:
    import asyncio

    from storage.local import LocalStore

    store = LocalStore(tmp_path / "objects", SIGNER, "http://127.0.0.1:1")
    try:
        assert store.path_for("inbound/msg_1/0") == tmp_path / "objects" / "inbound" / "msg_1" / "0"
        for key in ("../x", "inbound/../../x", "/etc/passwd", "a//b"):
            with pytest.raises(InvalidKey):
                store.path_for(key)
        await store.put("raw/m.eml", b"bytes")
        assert await store.get("raw/m.eml") == b"bytes"
        await asyncio.gather(*(store.check() for _ in range(64)))  # no probe collisions
    finally:
        await store.close()


ESCAPING_KEYS = ["../x", "/abs", "a/../../x", "inbound/../../x", "raw/\x00", "raw/a\x00b",
                 "..", "./raw/x", "raw/../../../../etc/passwd", "raw\\..\\..\\x"]


async def test_every_local_store_operation_refuses_keys_that_escape_the_root(
        tmp_path: Path) -> None:
    from storage.local import LocalStore

    store = LocalStore(tmp_path / "objects", SIGNER, "http://127.0.0.1:1")
    (tmp_path / "x").write_bytes(b"outside")
    spool = store.spool_dir / "f"
    operations = {
        "put": lambda k: store.put(k, b"evil"),
        "put_files": lambda k: store.put_files([(k, spool)]),
        "get": store.get,
        "get_file": lambda k: store.get_file(k, tmp_path / "copy"),
        "delete": store.delete,
        "exists": store.exists,
        "size": store.size,
        "list_keys": store.list_keys,
        "presign_get": lambda k: store.presign_get(k, expires_in=60, file_name="x",
                                                   content_type="text/plain"),
        "presign_put": lambda k: store.presign_put(k, expires_in=60, content_type="text/plain",
                                                   size=1),
        "presign_post": lambda k: store.presign_post(k, expires_in=60,
                                                     content_type="text/plain", max_bytes=1),
    }
    try:
        for key in ESCAPING_KEYS:
            for name, operation in operations.items():
                spool.write_bytes(b"evil")
                with pytest.raises(InvalidKey):
                    await operation(key)
                assert (tmp_path / "x").read_bytes() == b"outside", (name, key)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["objects", "x"]
    finally:
        await store.close()


async def test_a_symlink_in_the_root_that_points_out_is_refused(tmp_path: Path) -> None:
    from storage.local import LocalStore

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0").write_bytes(b"outside")
    store = LocalStore(tmp_path / "objects", SIGNER, "http://127.0.0.1:1")
    (store.root / "inbound" / "msg_evil").symlink_to(outside, target_is_directory=True)
    (store.root / "raw" / "msg_link.eml").symlink_to(outside / "0")
    spool = store.spool_dir / "f"
    try:
        for key in ("inbound/msg_evil/0", "inbound/msg_evil/1", "raw/msg_link.eml"):
            for operation in (lambda k: store.put(k, b"evil"), store.get, store.delete,
                              lambda k: store.put_files([(k, spool)]),
                              lambda k: store.get_file(k, tmp_path / "copy"), store.exists,
                              store.size):
                spool.write_bytes(b"evil")
                with pytest.raises(InvalidKey):
                    await operation(key)
            with pytest.raises(InvalidKey):
                store.path_for(key)  # what the daemon's signed-URL route serves from
        assert sorted(p.name for p in outside.iterdir()) == ["0"]
        assert (outside / "0").read_bytes() == b"outside"
        assert not (tmp_path / "copy").exists()
        # A root that is itself a symlink is fine: it is resolved once, at start.
        (tmp_path / "link").symlink_to(store.root, target_is_directory=True)
        linked = LocalStore(tmp_path / "link", SIGNER, "http://127.0.0.1:1")
        await linked.put("raw/m.eml", b"fine")
        assert await linked.get("raw/m.eml") == b"fine"
        await linked.close()
    finally:
        await store.close()
