"""The daemon on S3 (moto's server, a real process): mail in over SMTP, bytes out through presigned
URLs that point at the S3 server, 451 while it is down, and check-config naming a bad bucket."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage.s3 import MULTIPART_THRESHOLD
from tests.harness import Daemon, running_daemon, write_config
from tests.mail import with_attachment
from tests.s3server import MotoServer, start_moto_server

PREFIX = "mail/"


def s3_section(server: MotoServer, bucket: str) -> str:
    return (f'[storage]\nbackend = "s3"\nbucket = "{bucket}"\nprefix = "{PREFIX}"\n'
            f'endpoint_url = "{server.endpoint_url}"\nregion = "us-east-1"\n')


@pytest.fixture(scope="module")
def bucket(s3_server: MotoServer) -> str:
    return s3_server.new_bucket()


@pytest.fixture(scope="module")
def s3_daemon(s3_server: MotoServer, bucket: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("postroom-s3"), smtp='spool_threshold = "64k"',
                        extra=s3_section(s3_server, bucket)) as d:
        yield d


@pytest.fixture(scope="module")
def carol(s3_daemon: Daemon) -> dict[str, Any]:
    return s3_daemon.add_agent("carol", "carol@agents.test")


def _download(d: Daemon, key: str, path: str) -> tuple[httpx.Response, dict[str, Any]]:
    with d.api(key) as api:
        r = api.post(path)
        assert r.status_code == 200, r.text
        link: dict[str, Any] = r.json()
    return httpx.get(link["url"], timeout=60), link


def test_an_attachment_is_stored_in_the_bucket_and_downloads_from_s3(
        s3_daemon: Daemon, carol: dict[str, Any], s3_server: MotoServer, bucket: str) -> None:
    pdf = b"%PDF-1.7\n" + os.urandom(40_000) + b"\n%%EOF\n"
    msg_id = s3_daemon.send(with_attachment("carol@agents.test", pdf, file_name="Bericht ü.pdf"),
                            ["carol@agents.test"])
    message = s3_daemon.wait_message(carol["api_key"], msg_id)
    assert message["status"] == "ready", message
    [att] = message["attachments"]
    assert att["sha256"] == hashlib.sha256(pdf).hexdigest()
    got, link = _download(s3_daemon, carol["api_key"],
                          f"/v1/messages/{msg_id}/attachments/0/download")
    assert link["url"].startswith(f"{s3_server.endpoint_url}/{bucket}/{PREFIX}inbound/{msg_id}/0?")
    assert got.status_code == 200
    assert got.content == pdf
    assert got.headers["content-type"] == "application/pdf"
    assert "filename*=UTF-8''Bericht%20%C3%BC.pdf" in got.headers["content-disposition"]
    stored = {o["Key"] for o in s3_server.client().list_objects_v2(
        Bucket=bucket, Prefix=f"{PREFIX}")["Contents"]}
    assert {f"{PREFIX}raw/{msg_id}.eml", f"{PREFIX}inbound/{msg_id}/0"} <= stored


def test_a_large_message_goes_up_multipart_and_downloads_whole(
        s3_daemon: Daemon, carol: dict[str, Any], s3_server: MotoServer, bucket: str) -> None:
    payload = os.urandom(12 * 1024 * 1024)  # over the 64k spool threshold and the 8 MiB part
    msg_id = s3_daemon.send(with_attachment("carol@agents.test", payload, file_name="big.bin",
                                            content_type="application/octet-stream"),
                            ["carol@agents.test"])
    message = s3_daemon.wait_message(carol["api_key"], msg_id, timeout=60)
    assert message["status"] == "ready", message
    got, link = _download(s3_daemon, carol["api_key"],
                          f"/v1/messages/{msg_id}/attachments/0/download")
    assert got.status_code == 200
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(payload).digest()
    assert link["size"] == len(payload)
    raw, raw_link = _download(s3_daemon, carol["api_key"], f"/v1/messages/{msg_id}/raw/download")
    assert raw_link["sha256"] == hashlib.sha256(raw.content).hexdigest()
    client = s3_server.client()
    for key in (f"{PREFIX}raw/{msg_id}.eml", f"{PREFIX}inbound/{msg_id}/0"):
        head = client.head_object(Bucket=bucket, Key=key)
        parts = -(-head["ContentLength"] // MULTIPART_THRESHOLD)
        assert parts >= 2 and head["ETag"].strip('"').endswith(f"-{parts}"), (key, head["ETag"])
    assert list((s3_daemon.root / "var" / "spool").iterdir()) == []


def test_readyz_asks_the_bucket(s3_daemon: Daemon) -> None:
    r = httpx.get(f"{s3_daemon.url}/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["storage"] == "ok"


def test_check_config_probes_the_bucket(s3_server: MotoServer, bucket: str,
                                        tmp_path: Path) -> None:
    good = write_config(tmp_path, extra=s3_section(s3_server, bucket))
    d = Daemon(root=tmp_path, config_path=good, proc=None, env=dict(os.environ))  # type: ignore[arg-type]
    out = d.cli("check-config")
    assert "storage: s3" in out.stdout
    d.config_path = write_config(tmp_path, extra=s3_section(s3_server, "no-such-bucket-xyz"))
    out = d.cli("check-config", check=False)
    assert out.returncode == 1, out  # the store is unavailable: an outage, not a usage error
    assert "no-such-bucket-xyz" in out.stderr  # the bucket the operator named
    assert "Traceback" not in out.stderr
    d.config_path.write_text(d.config_path.read_text().replace('bucket = "no-such-bucket-xyz"\n',
                                                               ""))
    out = d.cli("check-config", check=False)
    assert out.returncode == 2, out
    assert "storage.bucket" in out.stderr  # the key to set, by name


def test_smtp_answers_451_while_s3_is_down(s3_server: MotoServer, fresh_root: Path) -> None:
    own = start_moto_server(fresh_root.parent / "moto")
    try:
        section = s3_section(own, own.new_bucket())
        with running_daemon(fresh_root, extra=section) as d:
            agent = d.add_agent("dora", "dora@agents.test")
            first = d.send(with_attachment("dora@agents.test", b"before"), ["dora@agents.test"])
            assert d.wait_message(agent["api_key"], first)["status"] == "ready"
            own.stop()
            code, text = d.try_send(with_attachment("dora@agents.test", b"after").as_bytes(),
                                    "dora@agents.test")
            assert code == 451, text
            r = httpx.get(f"{d.url}/readyz", timeout=60)
            assert r.status_code == 503
            assert "cannot be reached" in r.json()["checks"]["storage"]
    finally:
        own.stop()
