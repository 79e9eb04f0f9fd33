"""Agent uploads (SPEC §6): presigned POST forms and PUT URLs, direct uploads through the daemon,
and the download URL of an agent's own upload (the local store's URLs: `routes/objects.py`).

Keys are `uploads/<agent_id>/<uuid>-<slug>` (`storage.objects.upload_key`): a name a client sends
never reaches a path unchecked, and an agent reaches no key outside its own prefix (403).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from daemon.agents import utcnow
from daemon.api.deps import AppContext, Caller
from daemon.api.downloads import ExpiresIn, lifetime
from daemon.api.errors import ANY_BODY, ApiError, authed
from daemon.api.multipart import MultipartError
from daemon.api.upload_bodies import multipart_reader, spool_body, store_spooled
from daemon.api.upload_records import own_upload, record_upload, upload_link
from daemon.api.views import JsonBody, UploadObject, upload_view
from daemon.clock import iso
from extractors.filenames import extension_for, safe_file_name
from storage.errors import InvalidKey
from storage.models import READY, Upload
from storage.objects import PresignedGet, check_key, upload_key, uploads_prefix

router = APIRouter(tags=["uploads"], responses=ANY_BODY)

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


class FormUpload(BaseModel):
    """Where to POST the form, and its fields flat beside `url` (SPEC §6): seed 000's
    `{k: v for k, v in upload.items() if k != "url"}` is the whole form."""

    model_config = ConfigDict(extra="allow")  # the fields: key, policy, signature, …
    url: str


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


MULTIPART_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}}}}}}}


def _check_cap(cap: int, size: int, what: str) -> None:
    """An upload over uploads.max_bytes is refused with 413 on every route (SPEC §17), whether
    its bytes come through the daemon or go to a presigned URL."""
    if size > cap:
        raise ApiError(413, "too_large", f"{what} is over uploads.max_bytes ({cap})")


@router.post("/v1/uploads/form", response_model=FormResponse, responses=authed(400, 413, 422))
async def upload_form(caller: Caller, body: FormRequest) -> Response:
    """A presigned POST form: send every field of `upload` but `url`, then the file as the field
    `file`, to
    `upload.url`. The policy pins the key, the Content-Type and 0..`max_bytes`."""
    agent_id, ctx = caller.agent_id, caller.ctx
    max_bytes = ctx.upload_max_bytes if body.max_bytes is None else body.max_bytes
    _check_cap(ctx.upload_max_bytes, max_bytes, "max_bytes")
    key = upload_key(agent_id, uuid.uuid4().hex, body.file_name)
    form = await ctx.store.presign_post(key, expires_in=lifetime(ctx, body.expires_in),
                                        content_type=body.content_type, max_bytes=max_bytes)
    row = await record_upload(ctx, agent_id, key, body.file_name, body.content_type, "form",
                              form.expires_at, max_bytes=max_bytes)
    return JsonBody({"id": row.id, "object_key": key,
                     "upload": {"url": form.url, **form.fields},
                     "expires_at": iso(form.expires_at)})


@router.post("/v1/uploads/url", response_model=UrlResponse, responses=authed(400, 413, 422))
async def upload_url(caller: Caller, body: UrlRequest) -> Response:
    """A presigned PUT URL: send exactly `size` bytes with the given Content-Type."""
    return JsonBody(await put_upload(caller.ctx, caller.agent_id, body.file_name,
                                     body.content_type, body.size, body.expires_in))


async def put_upload(ctx: AppContext, agent_id: str, file_name: str, content_type: str,
                     size: int, expires_in: int | None) -> dict[str, Any]:
    """A presigned PUT of exactly `size` bytes of `content_type`, and its pending row:
    `{"upload_url", "object_key", "id", "expires_at"}`; 413 over uploads.max_bytes."""
    _check_cap(ctx.upload_max_bytes, size, "size")
    key = upload_key(agent_id, uuid.uuid4().hex, file_name)
    signed = await ctx.store.presign_put(key, expires_in=lifetime(ctx, expires_in),
                                         content_type=content_type, size=size)
    row = await record_upload(ctx, agent_id, key, file_name, content_type, "url",
                              signed.expires_at, size=size, max_bytes=size)
    return {"upload_url": signed.url, "object_key": key, "id": row.id,
            "expires_at": iso(signed.expires_at)}


@router.post("/v1/uploads", status_code=201, response_model=UploadObject,
             responses=authed(400), openapi_extra=MULTIPART_BODY)
async def upload_direct(caller: Caller, request: Request) -> Response:
    """Upload through the daemon: multipart/form-data with the file in the field `file`
    (at most uploads.max_bytes, else 413)."""
    row, link = await direct_upload(caller.ctx, caller.agent_id, request)
    return JsonBody(upload_view(row, link.url if link else None), status_code=201)


async def direct_upload(ctx: AppContext, agent_id: str, request: Request
                        ) -> tuple[Upload, PresignedGet | None]:
    """The file of the multipart field `file` of `request`, stored as a `ready` upload: its row
    and a download link. 413 over uploads.max_bytes, 400 for a body without the field."""
    cap = ctx.upload_max_bytes
    reader = multipart_reader(request)
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
            spooled = await spool_body(ctx, request, reader.data(), cap, ApiError(
                413, "too_large", f"the file is over uploads.max_bytes ({cap})"))
            await store_spooled(ctx.store, key, spooled)
            row = await record_upload(ctx, agent_id, key, file_name, content_type, "direct",
                                      status=READY, size=spooled.size, sha256=spooled.sha256,
                                      ready_at=utcnow())
            return row, await upload_link(ctx, row, ctx.presign_ttl)
    except MultipartError as e:
        raise ApiError(400, "invalid_multipart", str(e)) from None
    raise ApiError(400, "invalid_request", "no file in the multipart field `file`")


@router.post("/v1/uploads/download", response_model=UrlAndExpiry,
             responses=authed(400, 403, 404, 409, 422))
async def upload_download(caller: Caller, body: UploadDownloadRequest) -> Response:
    """A presigned URL of one of the agent's own uploads; 403 for any other key."""
    agent_id, ctx = caller.agent_id, caller.ctx
    try:
        check_key(body.object_key)
    except InvalidKey:
        raise ApiError(400, "invalid_key", "not an object key") from None
    if not body.object_key.startswith(uploads_prefix(agent_id)):
        raise ApiError(403, "forbidden", "the key is not under this agent's uploads")
    row = await own_upload(ctx, agent_id, object_key=body.object_key)
    link = await upload_link(ctx, row, lifetime(ctx, body.expires_in))
    if link is None:
        raise ApiError(409, "not_ready", "nothing has been uploaded under this key yet")
    return JsonBody({"url": link.url, "expires_at": iso(link.expires_at)})
