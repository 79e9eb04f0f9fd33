"""The URLs a store signs for the daemon to answer (`ObjectStore.url_signer`: the local store's
downloads, `GET`/`HEAD /objects/<key>`; forms, `POST /objects`; PUTs, `PUT /objects/<key>`).

Nothing a client sends is trusted before its signature checks out; every check S3 makes is made
here (403: signature, expiry, key, type; 400: size), and success answers as S3 does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from daemon.api.deps import AppContext, Ctx
from daemon.api.errors import ApiError, not_found
from daemon.api.multipart import MultipartError
from daemon.api.upload_bodies import (
    FORM_OVERHEAD,
    discard_spooled,
    drain,
    multipart_reader,
    spool_body,
    store_spooled,
)
from daemon.api.upload_records import mark_upload_ready
from storage.errors import StorageError
from storage.presign import UrlSigner, content_disposition

router = APIRouter(include_in_schema=False)

_FIELD_LIMIT = 8 * 1024  # one form field (the policy is the largest: well under 1 KiB)
_MAX_FIELDS = 32


def _signer(ctx: AppContext) -> UrlSigner:
    signer = ctx.store.url_signer
    if signer is None:  # not mounted for such a store; answered as a path that is not there
        raise not_found("object")
    return signer


def _forbidden() -> ApiError:
    return ApiError(403, "forbidden", "the upload's signature, expiry, key or type does not "
                                      "match what was signed")


async def _store_upload(ctx: AppContext, request: Request, key: str,
                        pieces: AsyncIterator[bytes], low: int, high: int) -> None:
    """The upload's `low`..`high` bytes stored under `key`, its row marked ready."""
    spooled = await spool_body(ctx, request, pieces, high, ApiError(
        400, "too_large", f"the upload is over the signed {high} bytes"))
    if spooled.size < low:
        discard_spooled(spooled)
        raise ApiError(400, "size_mismatch",
                       f"the upload has {spooled.size} bytes, {low} were signed")
    await store_spooled(ctx.store, key, spooled)
    await mark_upload_ready(ctx, key, spooled.size, spooled.sha256)


@router.post("/objects")
async def post_object(ctx: Ctx, request: Request) -> Response:
    """A presigned POST form's upload: the policy's fields, then the file; 204 when stored."""
    signer = _signer(ctx)
    reader = multipart_reader(request)
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
            policy = signer.verify_policy(fields.get("policy"), fields.get("signature"))
            if (policy is None or fields.get("key") != policy.key
                    or fields.get("content-type") != policy.content_type):
                await drain(request, ctx.upload_max_bytes + FORM_OVERHEAD)
                raise _forbidden()
            await _store_upload(ctx, request, policy.key, reader.data(), policy.min_bytes,
                                policy.max_bytes)
            return Response(status_code=204)
    except MultipartError as e:
        raise ApiError(400, "invalid_multipart", str(e)) from None
    raise ApiError(400, "invalid_request", "no file in the form field `file`")


@router.put("/objects/{key:path}")
async def put_object(ctx: Ctx, key: str, request: Request) -> Response:
    """A presigned PUT's upload of exactly the signed size and type; 200 when stored."""
    signed = _signer(ctx).verify_put(key, dict(request.query_params))
    if signed is None or request.headers.get("content-type") != signed.content_type:
        await drain(request, ctx.upload_max_bytes)
        raise _forbidden()
    if request.headers.get("content-length") != str(signed.size):
        await drain(request, ctx.upload_max_bytes)
        raise ApiError(400, "size_mismatch",
                       f"Content-Length must be the signed {signed.size} bytes")
    await _store_upload(ctx, request, key, request.stream(), signed.size, signed.size)
    return Response(status_code=200)


@router.api_route("/objects/{key:path}", methods=["GET", "HEAD"])
async def signed_object(ctx: Ctx, key: str, request: Request) -> FileResponse:
    """The object a signed download URL names, with the name and type it was signed with."""
    # A HEAD is checked against the signature of the GET it stands for.
    signed = _signer(ctx).verify(key, dict(request.query_params))
    if signed is None:
        raise ApiError(403, "forbidden", "the URL is expired or its signature is invalid")
    try:
        path = ctx.store.local_path(key)
    except StorageError:
        raise ApiError(403, "forbidden", "invalid object key") from None
    if path is None or not path.is_file():
        raise not_found("object")
    return FileResponse(path, media_type=signed.content_type, headers={
        "Content-Disposition": content_disposition(signed.file_name),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })
