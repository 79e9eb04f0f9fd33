"""The S3 object store against a real S3 API server (moto's server mode, a separate process).

moto enforces no signatures or expiry, so the presigned URL is also decoded and checked here.
`get_file`, new in the protocol, is checked on both stores.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from storage.errors import InvalidKey, ObjectNotFound, ObjectStoreUnavailable, TransientError
from storage.local import LocalStore
from storage.objects import ObjectStore
from storage.presign import UrlSigner, content_disposition
from storage.s3 import MULTIPART_THRESHOLD, S3Store
from storage.spool import spool_name
from tests.s3server import MotoServer, start_moto_server

PREFIX = "tenant-a/"


@pytest.fixture
def bucket(s3_server: MotoServer) -> str:
    return s3_server.new_bucket()


@pytest.fixture
async def s3(s3_server: MotoServer, bucket: str, tmp_path: Path) -> AsyncIterator[S3Store]:
    store = await S3Store.open(bucket, prefix=PREFIX, endpoint_url=s3_server.endpoint_url,
                               region="us-east-1", spool_dir=tmp_path / "spool")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["local", "s3"])
async def any_store(request: pytest.FixtureRequest, s3_server: MotoServer,
                    tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """Each backend in turn, for what the protocol promises of both."""
    store: ObjectStore
    if request.param == "s3":
        store = await S3Store.open(s3_server.new_bucket(), prefix=PREFIX,
                                   endpoint_url=s3_server.endpoint_url,
                                   spool_dir=tmp_path / "spool")
    else:
        store = LocalStore(tmp_path / "objects", UrlSigner(b"k" * 32), "http://127.0.0.1:1")
    try:
        yield store
    finally:
        await store.close()


def _spool_file(store: ObjectStore, data: bytes) -> Path:
    path = spool_name(store.spool_dir)
    path.write_bytes(data)
    return path


async def test_objects_round_trip_under_the_prefix(s3: S3Store, s3_server: MotoServer,
                                                   bucket: str) -> None:
    await s3.put("raw/msg_1.eml", b"Subject: hi\r\n\r\nbody", "message/rfc822")
    assert await s3.get("raw/msg_1.eml") == b"Subject: hi\r\n\r\nbody"
    assert await s3.exists("raw/msg_1.eml")
    head = s3_server.client().head_object(Bucket=bucket, Key=f"{PREFIX}raw/msg_1.eml")
    assert head["ContentType"] == "message/rfc822"
    assert s3.local_path("raw/msg_1.eml") is None
    await s3.delete("raw/msg_1.eml")
    assert not await s3.exists("raw/msg_1.eml")
    await s3.delete("raw/msg_1.eml")  # deleting what is gone is not an error


async def test_a_large_spool_file_goes_up_multipart_whole_and_is_consumed(
        s3: S3Store, s3_server: MotoServer, bucket: str) -> None:
    data = os.urandom(MULTIPART_THRESHOLD + 3 * 1024 * 1024)  # two parts
    path = _spool_file(s3, data)
    await s3.put_files([("inbound/msg_2/0", path)])
    assert not path.exists()
    head = s3_server.client().head_object(Bucket=bucket, Key=f"{PREFIX}inbound/msg_2/0")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-2")  # S3's mark of a two-part upload
    assert hashlib.sha256(await s3.get("inbound/msg_2/0")).digest() == \
        hashlib.sha256(data).digest()
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_small_spool_files_go_up_in_one_call_and_are_consumed(s3: S3Store) -> None:
    blobs = {f"inbound/msg_3/{i}": os.urandom(1000 * i) for i in range(12)}
    paths = {key: _spool_file(s3, data) for key, data in blobs.items()}
    await s3.put_files(list(paths.items()))
    assert not any(p.exists() for p in paths.values())
    for key, data in blobs.items():
        assert await s3.get(key) == data


async def test_get_file_writes_the_object_to_a_file(any_store: ObjectStore,
                                                    tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    await any_store.put("raw/msg_4.eml", data)
    dest = tmp_path / "copy.eml"
    await any_store.get_file("raw/msg_4.eml", dest)
    assert dest.read_bytes() == data
    dest.write_bytes(b"changed")  # a copy: the stored object stays as it was
    assert await any_store.get("raw/msg_4.eml") == data


async def test_a_missing_key_is_object_not_found(any_store: ObjectStore, tmp_path: Path) -> None:
    dest = tmp_path / "never.eml"
    with pytest.raises(ObjectNotFound):
        await any_store.get("raw/msg_missing.eml")
    with pytest.raises(ObjectNotFound):
        await any_store.get_file("raw/msg_missing.eml", dest)
    assert not dest.exists()
    assert not await any_store.exists("raw/msg_missing.eml")


async def test_keys_that_are_not_ours_are_refused_before_any_request(s3: S3Store) -> None:
    for key in ("../etc/passwd", "/abs", "a//b", "name with space"):
        with pytest.raises(InvalidKey):
            await s3.put(key, b"x")
        with pytest.raises(InvalidKey):
            await s3.presign_get(key, expires_in=60, file_name="x", content_type="text/plain")


async def test_presigned_get_is_bounded_by_the_ttl_and_serves_a_named_download(
        s3: S3Store) -> None:
    data = b"%PDF-1.7\n" + os.urandom(4096)
    await s3.put("inbound/msg_5/0", data)
    before = time.time()
    signed = await s3.presign_get("inbound/msg_5/0", expires_in=59.9,
                                  file_name="Résumé été.pdf", content_type="application/pdf")
    query = parse_qs(urlsplit(signed.url).query)
    assert urlsplit(signed.url).path.endswith(f"/{PREFIX}inbound/msg_5/0")
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert int(query["X-Amz-Expires"][0]) <= 59
    assert before + 58 <= signed.expires_at <= time.time() + 59.9
    assert query["X-Amz-SignedHeaders"] == ["host"] and query["X-Amz-Signature"][0]
    assert query["response-content-disposition"] == [content_disposition("Résumé été.pdf")]
    assert query["response-content-type"] == ["application/pdf"]
    async with httpx.AsyncClient() as http:
        got = await http.get(signed.url)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-type"] == "application/pdf"
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%20%C3%A9t%C3%A9.pdf" in \
        got.headers["content-disposition"]


async def test_check_passes_for_the_bucket(s3: S3Store) -> None:
    await s3.check()


def _s3_answered(error: BaseException) -> str | None:
    """S3's own error code behind one of our errors; None when S3 never answered."""
    cause = error.__cause__
    return str(cause.response["Error"]["Code"]) if isinstance(cause, ClientError) else None


async def test_a_missing_bucket_fails_check_as_unavailable(s3_server: MotoServer,
                                                           tmp_path: Path) -> None:
    store = await S3Store.open("no-such-bucket-here", endpoint_url=s3_server.endpoint_url,
                               spool_dir=tmp_path / "spool")
    try:
        with pytest.raises(ObjectStoreUnavailable) as err:
            await store.check()
        assert _s3_answered(err.value) in ("404", "NoSuchBucket")
        with pytest.raises(ObjectStoreUnavailable) as err:
            await store.put("raw/msg_6.eml", b"x")
        assert _s3_answered(err.value) == "NoSuchBucket"
    finally:
        await store.close()


async def test_a_stopped_server_is_a_transient_error_not_a_hang(s3_server: MotoServer,
                                                                tmp_path: Path) -> None:
    own = await asyncio.to_thread(start_moto_server, tmp_path / "moto")
    try:
        bucket = own.new_bucket()
    finally:
        own.stop()
    store = await S3Store.open(bucket, endpoint_url=own.endpoint_url,
                               spool_dir=tmp_path / "spool", max_attempts=2)
    path = _spool_file(store, b"queued bytes")
    try:
        async with asyncio.timeout(30):
            with pytest.raises(ObjectStoreUnavailable) as err:
                await store.check()
            assert _s3_answered(err.value) is None  # not S3's answer: it cannot be reached
            with pytest.raises(ObjectStoreUnavailable) as err:
                await store.put("raw/msg_7.eml", b"x")
            assert _s3_answered(err.value) is None
            with pytest.raises(TransientError):
                await store.put_files([("raw/msg_8.eml", path)])
            with pytest.raises(TransientError):
                await store.get("raw/msg_7.eml")
    finally:
        await store.close()
    assert path.read_bytes() == b"queued bytes"  # not consumed: the caller still owns it
