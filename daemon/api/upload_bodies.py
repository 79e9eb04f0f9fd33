"""Upload bodies on their way from a request into the store: the routes that stream their own
bodies (for `BodyLimit`), a request's multipart reader, and a body spooled (`storage.spool`,
hashed as it arrives, bounded) and then stored.

A body is never held whole: past the spool's threshold it goes to a file in the store's spool
directory. A refused body is read to its end (within a bound), so the client sees the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request

from daemon.api.bodylimit import StreamedRoute
from daemon.api.deps import AppContext
from daemon.api.errors import ApiError
from daemon.api.multipart import MultipartError, MultipartReader, boundary_of
from storage.objects import ObjectStore
from storage.spool import OverLimit, Spooled

# Room for the multipart framing and form fields around the file itself.
FORM_OVERHEAD = 64 * 1024
# A request's body comes in pieces of tens of KiB; the spool gets them in batches of this size,
# one hop to its thread (write and hash) per batch: per piece, hops were a third of the time.
WRITE_BATCH = 1 << 20


def streamed_routes(max_bytes: int) -> tuple[StreamedRoute, ...]:
    """The routes that read their own (upload-sized) bodies, for `BodyLimit`."""
    return (StreamedRoute("POST", "/v1/uploads", max_bytes + FORM_OVERHEAD),
            StreamedRoute("POST", "/attachments", max_bytes + FORM_OVERHEAD),  # AgentSend's
            StreamedRoute("POST", "/objects", max_bytes + FORM_OVERHEAD),
            StreamedRoute("PUT", "/objects/", max_bytes))


def multipart_reader(request: Request) -> MultipartReader:
    """The reader of a multipart/form-data body; 400 when the request is not one."""
    try:
        return MultipartReader(aiter(request.stream()),
                               boundary_of(request.headers.get("content-type")))
    except MultipartError as e:
        raise ApiError(400, "invalid_multipart", str(e)) from None


async def drain(request: Request, limit: int) -> None:
    """Read what the client still sends (up to `limit`), so it sees our answer, not a reset."""
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                return
    except RuntimeError:  # Starlette: the body was read to its end already
        return


async def spool_body(ctx: AppContext, request: Request, pieces: AsyncIterator[bytes],
                     limit: int, too_large: ApiError) -> Spooled:
    """`pieces` (of `request`'s body) spooled and hashed; `too_large` once they pass `limit`
    bytes. The caller owns the result's file: `store_spooled` or `discard_spooled` it."""
    spool = ctx.spooler.open(limit=limit)
    try:
        async for batch in _batched(pieces):
            await spool.write(batch)
    except OverLimit:
        spool.discard()
        await drain(request, ctx.upload_max_bytes + FORM_OVERHEAD)
        raise too_large from None
    except BaseException:
        spool.discard()
        raise
    return spool.finish()


async def _batched(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`pieces` joined into runs of at least WRITE_BATCH bytes (the last one may be shorter)."""
    batch = bytearray()
    async for piece in pieces:
        batch += piece
        if len(batch) >= WRITE_BATCH:
            yield bytes(batch)
            batch.clear()
    if batch:
        yield bytes(batch)


async def store_spooled(store: ObjectStore, key: str, spooled: Spooled) -> None:
    """Store a finished spool durably under `key`, consuming its file (also when it fails)."""
    try:
        if spooled.path is None:
            await store.put(key, spooled.data or b"")
        else:
            await store.put_files([(key, spooled.path)])
    except BaseException:
        discard_spooled(spooled)
        raise


def discard_spooled(spooled: Spooled) -> None:
    """Drop a finished spool that will not be stored."""
    if spooled.path is not None:
        spooled.path.unlink(missing_ok=True)
