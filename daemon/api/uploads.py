"""Agent uploads (SPEC §6): presigned POST forms, presigned PUT URLs, direct uploads, their
downloads, and any attachment by id.

Keys are `uploads/<agent_id>/<uuid>-<slug>` (`storage.objects.upload_key`): a name a client sends
never reaches a path unchecked, and an agent reaches only keys under its own prefix (403 for
any other). With the local store, the daemon itself answers the URLs it hands out (`POST
/objects`, `PUT /objects/<key>`) and enforces what S3 would: the signature, the expiry, the key,
the type (403) and the size (400). Upload bodies are streamed to a spool file, never held whole.

No `from __future__ import annotations`: FastAPI must see the routes' annotations as objects
(the agent dependency is a local of `uploads_router`).
"""

import asyncio
import hashlib
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import update
from sqlmodel import select

from daemon.agents import utcnow
from daemon.api.app import ApiContext, authed
from daemon.api.app import _iso_ts as iso_ts
from daemon.api.bodylimit import StreamedRoute
from daemon.api.errors import ApiError, not_found
from daemon.api.lookups import Lookups
from daemon.api.multipart import MultipartError, MultipartReader, boundary_of
from daemon.api.views import InboundAttachment, JsonBody, UploadObject, attachment_view, upload_view
from daemon.events import Wakeups, event_rows, record_events
from daemon.ids import new_upload_id
from extractors.filenames import extension_for, safe_file_name
from storage.db import translated_errors
from storage.errors import InvalidKey
from storage.local import LocalStore
from storage.models import PENDING, READY, Upload
from storage.objects import check_key, upload_key, uploads_prefix
from storage.presign import download_content_type
from storage.spool import spool_name

UPLOAD_COL: Any = Upload.__table__.c  # type: ignore[attr-defined]
# Room for the multipart framing and form fields around the file itself.
FORM_OVERHEAD = 64 * 1024
_FIELD_LIMIT = 8 * 1024  # one form field (the policy is the largest: well under 1 KiB)
_MAX_FIELDS = 32
_WRITE_BATCH = 1024 * 1024
_DROPPED = {"Cc", "Cf", "Cs", "Zl", "Zp"}
# type/subtype, optionally with parameters; printable ASCII only (it becomes an HTTP header).
_CONTENT_TYPE_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
    r"([ \t]*;[ \t]*[A-Za-z0-9!#$&^_.+-]+=(\"[ !#-~]*\"|[A-Za-z0-9!#$&^_.+-]+))*")


def _check_file_name(name: str) -> str:
    """A name an agent gives: a plain file name, no path, no control characters, ≤ 255 bytes."""
    if "/" in name or "\\" in name:
        raise ValueError("a file name, not a path")
    if any(unicodedata.category(ch) in _DROPPED for ch in name):
        raise ValueError("control or format characters are not allowed in a file name")
    if not name.strip(" .") or len(name.encode("utf-8")) > 255:
        raise ValueError("a file name must have 1 to 255 bytes (UTF-8) and not be dots only")
    # Then made safe as every other name is (a Windows device name, a trailing dot or space,
    # a character Windows refuses): `CON` becomes `_CON`, as it would in mail or a direct upload.
    return safe_file_name(name, 0, "application/octet-stream")


FileName = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_check_file_name)]
ContentType = Annotated[str, Field(min_length=3, max_length=255,
                                   pattern=f"^(?:{_CONTENT_TYPE_RE.pattern})$")]
ExpiresIn = Annotated[int | None, Field(ge=1, le=7 * 86400)]
Bytes = Annotated[int, Field(ge=0, le=2**62)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FormRequest(_Request):
    file_name: FileName
    content_type: ContentType
    max_bytes: Annotated[int | None, Field(ge=1, le=2**62)] = None  # default uploads.max_bytes
    expires_in: ExpiresIn = None


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the document lists every field we send


class FormUpload(_Response):
    url: str
    fields: dict[str, str]


class FormResponse(_Response):
    id: str
    object_key: str
    upload: FormUpload
    expires_at: str


class UrlRequest(_Request):
    file_name: FileName
    content_type: ContentType
    size: Bytes
    expires_in: ExpiresIn = None


class UrlResponse(_Response):
    upload_url: str
    object_key: str
    id: str
    expires_at: str


class UploadDownloadRequest(_Request):
    object_key: Annotated[str, Field(min_length=1, max_length=1024)]
    expires_in: ExpiresIn = None


class UrlAndExpiry(_Response):
    url: str
    expires_at: str


AttachmentId = Annotated[str, PathParam(min_length=1, max_length=64)]

_MULTIPART_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}}}}}}}


def streamed_routes(max_bytes: int) -> tuple[StreamedRoute, ...]:
    """The routes that read their own (upload-sized) bodies, for `BodyLimit`."""
    return (StreamedRoute("POST", "/v1/uploads", max_bytes + FORM_OVERHEAD),
            StreamedRoute("POST", "/objects", max_bytes + FORM_OVERHEAD),
            StreamedRoute("PUT", "/objects/", max_bytes))


class _TooLarge(Exception):
    pass


class SpoolFile:
    """An upload on its way into the store: written in 1 MiB batches, hashed as it goes, both
    in a thread; `limit` bounds it (`_TooLarge`)."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.path = spool_name(directory, "upload-")
        self.limit = limit
        self.size = 0
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self._file: IO[bytes] | None = None

    def _flush_sync(self, data: bytes) -> None:
        if self._file is None:
            self._file = self.path.open("wb")
        self._file.write(data)
        self._hash.update(data)

    async def write(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self.limit:
            raise _TooLarge
        self._pending += piece
        if len(self._pending) >= _WRITE_BATCH:
            data, self._pending = bytes(self._pending), bytearray()
            await asyncio.to_thread(self._flush_sync, data)

    async def finish(self) -> str:
        """Write what is left and close; returns the sha256 of everything."""
        data, self._pending = bytes(self._pending), bytearray()
        await asyncio.to_thread(self._flush_sync, data)
        assert self._file is not None
        await asyncio.to_thread(self._file.close)
        return self._hash.hexdigest()

    async def discard(self) -> None:
        def drop() -> None:
            if self._file is not None:
                self._file.close()
            self.path.unlink(missing_ok=True)
        await asyncio.to_thread(drop)


def uploads_router(ctx: ApiContext, agent_dependency: Any, lookups: Lookups) -> APIRouter:
    """The upload routes and `GET /v1/attachments/{id}`, authenticated by `agent_dependency`;
    with the local store also the routes that accept the uploads it signs."""
    router = APIRouter()
    store = ctx.store
    bus = ctx.events or Wakeups()
    cap = ctx.upload_max_bytes

    def ttl(asked: int | None) -> float:
        return float(min(asked or ctx.presign_ttl, ctx.presign_ttl))

    async def record(agent_id: str, key: str, file_name: str, content_type: str, flow: str,
                     expires_at: float | None = None, **known: Any) -> Upload:
        row = Upload(id=new_upload_id(), agent_id=agent_id, object_key=key, file_name=file_name,
                     content_type=content_type, flow=flow, created_at=utcnow(),
                     expires_at=(None if expires_at is None
                                 else datetime.fromtimestamp(expires_at, UTC)),
                     status=known.pop("status", PENDING), **known)
        async with ctx.sessions() as session, translated_errors():
            session.add(row)
            if row.status == READY:
                await (await session.connection()).run_sync(record_events, event_rows(
                    [agent_id], "upload.ready", None, utcnow(), attachment_id=row.id,
                    status=READY))
            await session.commit()
        if row.status == READY:
            bus.wake()
        return row

    async def mark_ready(key: str, size: int, sha256: str | None) -> None:
        async with ctx.sessions() as session, translated_errors():
            flipped = (await session.execute(
                update(Upload).where(UPLOAD_COL.object_key == key, UPLOAD_COL.status == PENDING)
                .values(status=READY, size=size, sha256=sha256, ready_at=utcnow())
                .returning(UPLOAD_COL.id, UPLOAD_COL.agent_id))).first()
            if flipped is not None:  # once, however many requests notice it together
                await (await session.connection()).run_sync(record_events, event_rows(
                    [str(flipped[1])], "upload.ready", None, utcnow(),
                    attachment_id=str(flipped[0]), status=READY))
            await session.commit()
        bus.wake()

    async def refreshed(row: Upload) -> Upload:
        """The row, `ready` (with its size) once the object is in the store."""
        if row.status != PENDING:
            return row
        size = await store.size(row.object_key)
        if size is None:
            return row
        await mark_ready(row.object_key, size, row.sha256)
        row.status, row.size, row.ready_at = READY, size, utcnow()
        return row

    async def own_upload(agent_id: str, **where: str) -> Upload:
        async with ctx.sessions() as session, translated_errors():
            stmt = select(Upload).where(UPLOAD_COL.agent_id == agent_id)
            for name, value in where.items():
                stmt = stmt.where(UPLOAD_COL[name] == value)
            row = (await session.exec(stmt)).first()
        if row is None:
            raise not_found("upload")
        return await refreshed(row)

    async def download_url(row: Upload, expires_in: float) -> tuple[str, float] | None:
        if row.status != READY:
            return None
        signed = await store.presign_get(row.object_key, expires_in=expires_in,
                                         file_name=row.file_name,
                                         content_type=download_content_type(row.content_type))
        return signed.url, signed.expires_at

    def check_cap(size: int, what: str) -> None:
        if size > cap:
            raise ApiError(400, "too_large", f"{what} is over uploads.max_bytes ({cap})")

    @router.post("/v1/uploads/form", tags=["uploads"], response_model=FormResponse,
                 responses=authed(400, 422))
    async def upload_form(agent_id: agent_dependency, body: FormRequest) -> Response:
        """A presigned POST form: send `upload.fields`, then the file as the field `file`, to
        `upload.url`. The policy pins the key, the Content-Type and 0..`max_bytes`."""
        max_bytes = cap if body.max_bytes is None else body.max_bytes
        check_cap(max_bytes, "max_bytes")
        key = upload_key(agent_id, uuid.uuid4().hex, body.file_name)
        form = await store.presign_post(key, expires_in=ttl(body.expires_in),
                                        content_type=body.content_type, max_bytes=max_bytes)
        row = await record(agent_id, key, body.file_name, body.content_type, "form",
                           form.expires_at, max_bytes=max_bytes)
        return JsonBody({"id": row.id, "object_key": key,
                         "upload": {"url": form.url, "fields": form.fields},
                         "expires_at": iso_ts(form.expires_at)})

    @router.post("/v1/uploads/url", tags=["uploads"], response_model=UrlResponse,
                 responses=authed(400, 422))
    async def upload_url(agent_id: agent_dependency, body: UrlRequest) -> Response:
        """A presigned PUT URL: send exactly `size` bytes with the given Content-Type."""
        check_cap(body.size, "size")
        key = upload_key(agent_id, uuid.uuid4().hex, body.file_name)
        signed = await store.presign_put(key, expires_in=ttl(body.expires_in),
                                         content_type=body.content_type, size=body.size)
        row = await record(agent_id, key, body.file_name, body.content_type, "url",
                           signed.expires_at, size=body.size, max_bytes=body.size)
        return JsonBody({"upload_url": signed.url, "object_key": key, "id": row.id,
                         "expires_at": iso_ts(signed.expires_at)})

    @router.post("/v1/uploads", tags=["uploads"], status_code=201, response_model=UploadObject,
                 responses=authed(400), openapi_extra=_MULTIPART_BODY)
    async def upload_direct(agent_id: agent_dependency, request: Request) -> Response:
        """Upload through the daemon: multipart/form-data with the file in the field `file`
        (at most uploads.max_bytes, else 413)."""
        reader = _reader(request)
        try:
            async for part in reader.parts():
                if part.name != "file":
                    continue
                content_type = (part.content_type if part.content_type
                                and _CONTENT_TYPE_RE.fullmatch(part.content_type)
                                and len(part.content_type) <= 255
                                else "application/octet-stream")
                file_name = (safe_file_name(part.file_name, 0, content_type) if part.file_name
                             else f"upload.{extension_for(content_type)}")
                key = upload_key(agent_id, uuid.uuid4().hex, file_name)
                spool = SpoolFile(store.spool_dir, cap)
                try:
                    async for piece in reader.data():
                        await spool.write(piece)
                    sha256 = await spool.finish()
                    await store.put_files([(key, spool.path)])
                except _TooLarge:
                    await spool.discard()
                    await _drain(request, cap + FORM_OVERHEAD)
                    raise ApiError(413, "too_large",
                                   f"the file is over uploads.max_bytes ({cap})") from None
                except BaseException:
                    await spool.discard()
                    raise
                row = await record(agent_id, key, file_name, content_type, "direct",
                                   status=READY, size=spool.size, sha256=sha256,
                                   ready_at=utcnow())
                link = await download_url(row, ctx.presign_ttl)
                return JsonBody(upload_view(row, link[0] if link else None), status_code=201)
        except MultipartError as e:
            raise ApiError(400, "invalid_multipart", str(e)) from None
        raise ApiError(400, "invalid_request", "no file in the multipart field `file`")

    @router.post("/v1/uploads/download", tags=["uploads"], response_model=UrlAndExpiry,
                 responses=authed(400, 403, 404, 409, 422))
    async def upload_download(agent_id: agent_dependency,
                              body: UploadDownloadRequest) -> Response:
        """A presigned URL of one of the agent's own uploads; 403 for any other key."""
        try:
            check_key(body.object_key)
        except InvalidKey:
            raise ApiError(400, "invalid_key", "not an object key") from None
        if not body.object_key.startswith(uploads_prefix(agent_id)):
            raise ApiError(403, "forbidden", "the key is not under this agent's uploads")
        row = await own_upload(agent_id, object_key=body.object_key)
        link = await download_url(row, ttl(body.expires_in))
        if link is None:
            raise ApiError(409, "not_ready", "nothing has been uploaded under this key yet")
        return JsonBody({"url": link[0], "expires_at": iso_ts(link[1])})

    @router.get("/v1/attachments/{attachment_id}", tags=["attachments"],
                response_model=InboundAttachment | UploadObject, responses=authed(404, 422))
    async def get_attachment(agent_id: agent_dependency,
                             attachment_id: AttachmentId) -> Response:
        """An inbound attachment (`att_…`) of a message addressed to the agent, or one of its
        uploads (`upl_…`), with a fresh download `url` when it is ready."""
        if attachment_id.startswith("upl_"):
            row = await own_upload(agent_id, id=attachment_id)
            link = await download_url(row, ctx.presign_ttl)
            return JsonBody(upload_view(row, link[0] if link else None))
        att = await lookups.attachment_by_id(agent_id, attachment_id)
        if att is None:
            raise not_found("attachment")
        view = attachment_view(att)
        view["url"] = None
        if att.status == READY and att.object_key:
            signed = await store.presign_get(
                att.object_key, expires_in=ctx.presign_ttl, file_name=att.file_name,
                content_type=download_content_type(att.content_type))
            view["url"] = signed.url
        return JsonBody(view)

    if isinstance(store, LocalStore):
        _local_upload_routes(router, store, cap, mark_ready)
    return router


def _reader(request: Request) -> MultipartReader:
    try:
        return MultipartReader(aiter(request.stream()),
                               boundary_of(request.headers.get("content-type")))
    except MultipartError as e:
        raise ApiError(400, "invalid_multipart", str(e)) from None


async def _drain(request: Request, limit: int) -> None:
    """Read what the client still sends (up to `limit`), so it sees our answer, not a reset."""
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                return
    except RuntimeError:  # Starlette: the body was read to its end already
        return


def _local_upload_routes(router: APIRouter, store: LocalStore, cap: int,
                         mark_ready: Any) -> None:
    """`POST /objects` (presigned forms) and `PUT /objects/<key>` (presigned PUTs) of the local
    store, which check what S3 checks: 403 for the signature, expiry, key and type, 400 for
    the size. Success answers as S3 does: 204 for a form, 200 for a PUT."""
    forbidden = ApiError(403, "forbidden", "the upload's signature, expiry, key or type does "
                                           "not match what was signed")

    async def store_spooled(request: Request, key: str, pieces: AsyncIterator[bytes],
                            low: int, high: int) -> None:
        spool = SpoolFile(store.spool_dir, high)
        try:
            async for piece in pieces:
                await spool.write(piece)
            sha256 = await spool.finish()
            if spool.size < low:
                raise ApiError(400, "size_mismatch",
                               f"the upload has {spool.size} bytes, {low} were signed")
            await store.put_files([(key, spool.path)])
        except _TooLarge:
            await spool.discard()
            await _drain(request, cap + FORM_OVERHEAD)
            raise ApiError(400, "too_large", f"the upload is over the signed {high} bytes"
                           ) from None
        except BaseException:
            await spool.discard()
            raise
        await mark_ready(key, spool.size, sha256)

    @router.post("/objects", include_in_schema=False)
    async def post_object(request: Request) -> Response:
        reader = _reader(request)
        fields: dict[str, str] = {}
        try:
            async for part in reader.parts():
                if part.name != "file":
                    if len(fields) >= _MAX_FIELDS:
                        raise ApiError(400, "invalid_multipart", "too many form fields")
                    # S3 form field names are case-insensitive.
                    fields[part.name.lower()] = (await reader.read(_FIELD_LIMIT)).decode(
                        "utf-8", "replace")
                    continue
                policy = store.signer.verify_policy(fields.get("policy"),
                                                    fields.get("signature"))
                if (policy is None or fields.get("key") != policy.key
                        or fields.get("content-type") != policy.content_type):
                    await _drain(request, cap + FORM_OVERHEAD)
                    raise forbidden
                await store_spooled(request, policy.key, reader.data(), policy.min_bytes,
                                    policy.max_bytes)
                return Response(status_code=204)
        except MultipartError as e:
            raise ApiError(400, "invalid_multipart", str(e)) from None
        raise ApiError(400, "invalid_request", "no file in the form field `file`")

    @router.put("/objects/{key:path}", include_in_schema=False)
    async def put_object(key: str, request: Request) -> Response:
        signed = store.signer.verify_put(key, dict(request.query_params))
        if signed is None or request.headers.get("content-type") != signed.content_type:
            await _drain(request, cap)
            raise forbidden
        declared = request.headers.get("content-length")
        if declared != str(signed.size):
            await _drain(request, cap)
            raise ApiError(400, "size_mismatch",
                           f"Content-Length must be the signed {signed.size} bytes")
        await store_spooled(request, key, request.stream(), signed.size, signed.size)
        return Response(status_code=200)
