"""The S3 object store: objects in one bucket under one key prefix, through one aioboto3 client.

Credentials come from the standard AWS chain (environment, shared profile, instance role); postroom
holds none. Every botocore and aiohttp error is translated here, and nowhere else: a missing key
becomes ObjectNotFound, anything else ObjectStoreUnavailable, a TransientError (SMTP 451, a
retried job, HTTP 503). Large files move in bounded pieces (multipart parts up, megabyte chunks
down), never read whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import aioboto3  # type: ignore[import-untyped]
import aiohttp
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)

from storage.errors import ObjectNotFound
from storage.errors import ObjectStoreUnavailable as Unavailable
from storage.objects import PresignedGet, PresignedPost, StoredObject, check_key
from storage.presign import UrlSigner, content_disposition

T = TypeVar("T")

MIB = 1024 * 1024
# Files above this go up as a multipart upload of PART_SIZE parts (S3's minimum part is 5 MiB).
MULTIPART_THRESHOLD = 8 * MIB
PART_SIZE = 8 * MIB
# A large upload holds at most this many parts in memory (each read when its turn comes), and
# at most this many large uploads run at once per store: 4 × 2 × 8 MiB.
_PART_CONCURRENCY = 2
_LARGE_UPLOADS_AT_ONCE = 4
# Small files are read whole (each is under the threshold): at most this many at once.
_SMALL_UPLOADS_AT_ONCE = 8
_DOWNLOAD_CHUNK = MIB
# SigV4 presigned URLs cannot live longer than a week.
_MAX_PRESIGN_SECONDS = 7 * 86400
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
# What the network, the HTTP client or the SDK may raise; ClientError is S3's own answer.
_FAILURES = (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)


def _describe(e: BaseException) -> str:
    if isinstance(e, NoCredentialsError):
        return ("no AWS credentials found (environment variables, shared profile or instance "
                "role)")
    return str(e) or type(e).__name__


def _error_code(e: ClientError) -> str:
    """S3's error code, or the HTTP status when the answer had no body (HEAD requests)."""
    code = e.response.get("Error", {}).get("Code")
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    return str(code or status)


class S3Store:
    """Objects in `bucket` under `prefix`; downloads via S3 presigned GET URLs.

    Call `start()` (or use `S3Store.open`) before anything else, `close()` at the end.
    """

    def __init__(self, bucket: str, *, spool_dir: Path, prefix: str = "",
                 endpoint_url: str | None = None, region: str | None = None,
                 max_attempts: int = 3, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.spool_dir = spool_dir
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {
            "signature_version": "s3v4",
            # "standard" retries throttling, 5xx and connection errors with jittered backoff.
            "retries": {"mode": "standard", "max_attempts": max_attempts},
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "max_pool_connections": 32,
        }
        if endpoint_url:
            # S3-compatible servers (MinIO, R2, moto) under a plain host name or an IP address:
            # path-style URLs work everywhere, virtual-host ones need wildcard DNS.
            options["s3"] = {"addressing_style": "path"}
            # And not every one of them speaks the checksum headers botocore now adds by default.
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        self._config = AioConfig(**options)
        self._small_uploads = asyncio.Semaphore(_SMALL_UPLOADS_AT_ONCE)
        self._large_uploads = asyncio.Semaphore(_LARGE_UPLOADS_AT_ONCE)
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @classmethod
    async def open(cls, bucket: str, **kwargs: Any) -> S3Store:
        """A started store (see `__init__` for the arguments)."""
        store = cls(bucket, **kwargs)
        await store.start()
        return store

    async def start(self) -> None:
        """Create the one client the store uses for its whole life (no network call yet)."""
        async with self._translated("setup"):
            session = aioboto3.Session()
            self._client = await self._stack.enter_async_context(session.client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                config=self._config))

    def _where(self) -> str:
        return f"bucket {self.bucket!r}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    @contextlib.asynccontextmanager
    async def _translated(self, action: str, key: str | None = None) -> AsyncIterator[None]:
        """botocore and aiohttp errors → ObjectNotFound (for `key`) or ObjectStoreUnavailable."""
        try:
            yield
        except ClientError as e:
            code = _error_code(e)
            if key is not None and code in _NOT_FOUND:
                raise ObjectNotFound(key) from e
            message = e.response.get("Error", {}).get("Message") or code
            raise Unavailable(f"S3 {action} in {self._where()} failed: {message}") from e
        except _FAILURES as e:
            raise Unavailable(f"S3 {action} in {self._where()} failed: {_describe(e)}") from e

    def _object(self, key: str) -> dict[str, str]:
        return {"Bucket": self.bucket, "Key": self.prefix + check_key(key)}

    async def put(self, key: str, data: bytes,
                  content_type: str = "application/octet-stream") -> None:
        """One PUT; S3 acknowledges only what it has stored durably."""
        target = self._object(key)
        async with self._translated("put"):
            await self._client.put_object(**target, Body=_body(data), ContentType=content_type)

    async def put_files(self, items: Sequence[tuple[str, Path]]) -> None:
        """Upload each spool file (multipart from 8 MiB on), then remove it.

        A failure cancels the uploads still running and leaves every file not yet uploaded
        where it is: the caller still owns those.
        """
        targets = [(self._object(key), path) for key, path in items]
        await _all_or_cancel([self._upload_file(target, path) for target, path in targets])

    async def _upload_file(self, target: dict[str, str], path: Path) -> None:
        async with self._translated("upload"):
            size = (await asyncio.to_thread(path.stat)).st_size
            if size < MULTIPART_THRESHOLD:
                async with self._small_uploads:
                    data = await asyncio.to_thread(path.read_bytes)
                    await self._client.put_object(**target, Body=_body(data))
            else:
                async with self._large_uploads:
                    await self._upload_multipart(target, path, size)
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def _upload_multipart(self, target: dict[str, str], path: Path, size: int) -> None:
        """PART_SIZE parts, _PART_CONCURRENCY in flight, each read from the file when it goes.

        An upload that fails is aborted, so the bucket keeps no orphaned parts (best effort:
        a bucket lifecycle rule should expire incomplete uploads too).
        """
        upload_id = (await self._client.create_multipart_upload(**target))["UploadId"]
        gate = asyncio.Semaphore(_PART_CONCURRENCY)

        async def send(number: int) -> dict[str, Any]:
            async with gate:
                offset = (number - 1) * PART_SIZE
                chunk = await asyncio.to_thread(_read_part, path, offset, PART_SIZE)
                answer = await self._client.upload_part(
                    **target, UploadId=upload_id, PartNumber=number, Body=io.BytesIO(chunk))
            return {"ETag": answer["ETag"], "PartNumber": number}

        try:
            parts = await _all_or_cancel(
                [send(n) for n in range(1, (size + PART_SIZE - 1) // PART_SIZE + 1)])
            await self._client.complete_multipart_upload(
                **target, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(*_FAILURES, ClientError):
                await self._client.abort_multipart_upload(**target, UploadId=upload_id)
            raise

    def local_path(self, key: str) -> Path | None:
        """None: no process can read an S3 object as a file."""
        return None

    @property
    def url_signer(self) -> UrlSigner | None:
        """None: S3 answers the URLs it signs."""
        return None

    async def get(self, key: str) -> bytes:
        target = self._object(key)
        async with self._translated("get", key):
            response = await self._client.get_object(**target)
            body = response["Body"]
            async with body:
                data: bytes = await body.read()
        return data

    async def get_file(self, key: str, dest: Path) -> None:
        """Stream the object into `dest`, a megabyte at a time; `dest` is removed on failure."""
        target = self._object(key)
        out: IO[bytes] | None = None
        try:
            async with self._translated("download", key):
                response = await self._client.get_object(**target)
                body = response["Body"]
                async with body:
                    out = await asyncio.to_thread(dest.open, "wb")
                    pending = bytearray()
                    # aiohttp hands out what has arrived (often 16-64 KiB): batch the writes.
                    async for chunk in body.iter_chunks(_DOWNLOAD_CHUNK):
                        pending += chunk
                        if len(pending) >= _DOWNLOAD_CHUNK:
                            await asyncio.to_thread(out.write, pending)
                            pending = bytearray()
                    await asyncio.to_thread(out.write, pending)
                    await asyncio.to_thread(out.close)
        except BaseException:
            if out is not None:
                await asyncio.to_thread(_discard, out, dest)
            raise

    async def delete(self, key: str) -> None:
        target = self._object(key)
        async with self._translated("delete", key):
            await self._client.delete_object(**target)

    async def exists(self, key: str) -> bool:
        target = self._object(key)
        try:
            async with self._translated("head", key):
                await self._client.head_object(**target)
        except ObjectNotFound:
            return False
        return True

    async def list_keys(self, prefix: str, start_after: str = "",
                        limit: int = 1000) -> list[StoredObject]:
        """One ListObjectsV2 page (S3 lists keys in UTF-8 binary order, as ours sort)."""
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix,
                                   "MaxKeys": max(1, min(limit, 1000))}
        if start_after:
            request["StartAfter"] = self.prefix + start_after
        async with self._translated("list"):
            page = await self._client.list_objects_v2(**request)
        return [StoredObject(o["Key"][len(self.prefix):], o["LastModified"].timestamp())
                for o in page.get("Contents", [])]

    async def size(self, key: str) -> int | None:
        target = self._object(key)
        try:
            async with self._translated("head", key):
                head = await self._client.head_object(**target)
        except ObjectNotFound:
            return None
        return int(head["ContentLength"])

    async def presign_post(self, key: str, *, expires_in: float, content_type: str,
                           max_bytes: int) -> PresignedPost:
        """A SigV4 POST policy: S3 itself refuses another key, type or a size out of range."""
        target = self._object(key)
        seconds = max(1, min(int(expires_in), _MAX_PRESIGN_SECONDS))
        expires_at = time.time() + seconds
        async with self._translated("presign", key):
            form: dict[str, Any] = await self._client.generate_presigned_post(
                target["Bucket"], target["Key"], Fields={"Content-Type": content_type},
                Conditions=[{"Content-Type": content_type},
                            ["content-length-range", 0, max_bytes]],
                ExpiresIn=seconds)
        return PresignedPost(form["url"], dict(form["fields"]), float(int(expires_at)))

    async def presign_put(self, key: str, *, expires_in: float, content_type: str,
                          size: int) -> PresignedGet:
        """A SigV4 PUT URL with Content-Type and Content-Length among the signed headers."""
        target = self._object(key)
        seconds = max(1, min(int(expires_in), _MAX_PRESIGN_SECONDS))
        expires_at = time.time() + seconds
        async with self._translated("presign", key):
            url: str = await self._client.generate_presigned_url(
                "put_object", ExpiresIn=seconds,
                Params={**target, "ContentType": content_type, "ContentLength": size})
        return PresignedGet(url, float(int(expires_at)))

    async def presign_get(
        self, key: str, *, expires_in: float, file_name: str, content_type: str
    ) -> PresignedGet:
        """A SigV4 GET URL whose response headers S3 sets from the signed query.

        `content_type` is served as given: the caller passes the safe type.
        """
        target = self._object(key)
        # Whole seconds, rounded down: the URL never outlives what the caller asked for.
        seconds = max(1, min(int(expires_in), _MAX_PRESIGN_SECONDS))
        expires_at = time.time() + seconds
        async with self._translated("presign", key):
            url: str = await self._client.generate_presigned_url(
                "get_object", ExpiresIn=seconds, Params={
                    **target, "ResponseContentDisposition": content_disposition(file_name),
                    "ResponseContentType": content_type})
        return PresignedGet(url, float(int(expires_at)))

    async def check(self) -> None:
        """HEAD the bucket; Unavailable naming it when it is missing, refused or unreachable."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code = _error_code(e)
            if code in ("404", "NoSuchBucket"):
                reason = "does not exist"
            elif code in ("403", "AccessDenied"):
                reason = "refuses access with these credentials"
            else:
                reason = f"answered {code}"
            raise Unavailable(f"S3 {self._where()} {reason}") from e
        except _FAILURES as e:
            raise Unavailable(f"S3 {self._where()} cannot be reached: {_describe(e)}") from e

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


def _body(data: bytes) -> bytes | io.BytesIO:
    """What aiohttp sends without complaint: it warns on bytes bodies over 1 MiB."""
    return data if len(data) <= MIB else io.BytesIO(data)


def _read_part(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


async def _all_or_cancel(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run `coros` concurrently; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _discard(out: IO[bytes], dest: Path) -> None:
    out.close()
    dest.unlink(missing_ok=True)
