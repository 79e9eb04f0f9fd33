"""The HTTP API (SPEC §6): messages, attachment status, presigned downloads, health.

Every route resolves the agent from its key first; a message that is not addressed to that
agent answers 404 exactly as a missing one does. Errors always have the SPEC's body and never a
stack trace. The local store's signed URLs are served here too, under `/objects/`.
"""


import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException

from daemon.api.errors import ApiError, error_responses, not_found
from daemon.api.keycache import MAX_TTL, KeyCache
from daemon.api.lookups import Lookups
from daemon.api.routes.events import events_router
from daemon.api.views import (
    AttachmentStatus,
    JsonBody,
    MessageList,
    MessageView,
    attachment_view,
    message_summary,
    message_view,
)
from daemon.events import Wakeups
from daemon.ops import METRICS_CONTENT_TYPE, Metrics
from storage.db import translated_errors
from storage.errors import DatabaseError, ObjectNotFound, StorageError, TransientError
from storage.local import LocalStore
from storage.models import PURGED, READY, TERMINAL_ATTACHMENT, UNFINISHED, Message, Recipient
from storage.objects import ObjectStore
from storage.presign import content_disposition, download_content_type

log = structlog.get_logger("postroom.api")

INLINE_BODY_LIMIT = 1 << 20  # bodies above this are not inlined in GET /v1/messages/{id}


@dataclass
class ApiContext:
    sessions: async_sessionmaker[AsyncSession]
    store: ObjectStore
    notifier: Wakeups
    presign_ttl: float
    max_wait: float
    lookups: Lookups | None = None  # None: made here on the engine `sessions` is bound to
    key_cache_ttl: float = MAX_TTL  # how long a confirmed key is trusted (≤ 2 s)
    upload_max_bytes: int = 10 * 1024**2  # uploads.max_bytes
    events: Wakeups | None = None  # None: long polls only re-read every second
    metrics: Metrics | None = None  # None: no /metrics


MessageId = Annotated[str, Path(min_length=1, max_length=64)]
Index = Annotated[int, Path(ge=0, le=2**31 - 1)]
MAX_CURSOR = 2**63 - 1


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    expires_in: Annotated[int | None, Field(ge=1, le=7 * 86400)] = None


class DownloadResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the document lists every field we send
    url: str
    expires_at: str
    file_name: str
    content_type: str
    size: int  # of the plaintext, as `sha256`
    sha256: str
    # Encrypted at rest (SPEC §8): the URL serves an armored OpenPGP file of this digest.
    encrypted: bool = False
    stored_size: int | None = None
    stored_sha256: str | None = None


PGP_ENCRYPTED = "application/pgp-encrypted"


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def authed(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The refusals of a route that takes an API key (which needs the database): 401 and 503,
    plus `statuses`."""
    return error_responses(401, *statuses, 503)


# How agents authenticate (SPEC §6), for the OpenAPI document; `current_agent` reads them.
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "the agent's API key"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "the agent's API key"},
}


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the ASGI app around `ctx`."""
    # Any request, whatever its route, may carry a body over http.max_body (daemon/bodylimit).
    app = FastAPI(title="postroom", version="0.1.0", docs_url=None, redoc_url=None,
                  responses=error_responses(413))
    generated_openapi = app.openapi

    def documented_openapi() -> dict[str, Any]:
        """FastAPI's document plus the API-key schemes on every `/v1` operation."""
        if app.openapi_schema is None:
            doc = generated_openapi()
            doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in doc["paths"].items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
        return app.openapi_schema or {}

    app.openapi = documented_openapi  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid')}"
        return JSONResponse(_error_body("invalid_request", detail), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own 400 is a JSON body it cannot even decode (bytes that are not UTF-8).
        code = {400: "invalid_request", 404: "not_found",
                405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # exc.headers: a 405 names the allowed methods (Allow), as RFC 9110 requires.
        return JSONResponse(_error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(StorageError)
    async def _storage(request: Request, exc: StorageError) -> JSONResponse:
        log.warning("api.storage_error", path=request.url.path, error=str(exc))
        if ctx.metrics is not None:
            if isinstance(exc, DatabaseError):
                ctx.metrics.errors.count_database("api")
            else:
                ctx.metrics.errors.count_storage("api")
        return JSONResponse(_error_body("unavailable", "storage is unavailable, retry later"),
                            status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("api.unexpected_error", path=request.url.path, exc_info=exc)
        return JSONResponse(_error_body("internal", "internal error"), status_code=500)

    lookups = ctx.lookups or Lookups(ctx.sessions.kw["bind"])
    keys = KeyCache(lookups.agent_id_for_key_hash, ctx.key_cache_ttl)

    async def current_agent(request: Request) -> str:
        """The id of the agent whose key the request carries; 401 otherwise, also when it
        carries two different keys (Bearer and X-API-Key): which one was meant is a guess."""
        given = {v[7:].strip() for v in request.headers.getlist("authorization")
                 if v[:7].lower() == "bearer "}
        given.update(request.headers.getlist("x-api-key"))
        given.discard("")
        if len(given) > 1:
            raise ApiError(401, "unauthorized", "two different API keys")
        if not given:
            raise ApiError(401, "unauthorized", "missing API key")
        agent_id = await keys.agent_id(given.pop())
        if agent_id is None:
            raise ApiError(401, "unauthorized", "invalid API key")
        return agent_id

    AgentId = Annotated[str, Depends(current_agent)]
    from daemon.api.uploads import uploads_router  # imported here: it builds on this module

    app.include_router(uploads_router(ctx, AgentId, lookups))
    app.include_router(events_router(ctx.sessions, ctx.events or Wakeups(), AgentId,
                                     ctx.max_wait), responses=authed(400, 422))

    async def load_message(agent_id: str, message_id: str, with_attachments: bool = False
                           ) -> tuple[Sequence[Any], Sequence[Any]]:
        """The message once per own recipient row, and its attachments if asked; 404 if the
        agent cannot see it."""
        found = await lookups.message(agent_id, message_id, with_attachments)
        if found is None:
            raise not_found()
        return found

    async def load_attachment(agent_id: str, message_id: str, index: int,
                              wait: float = 0.0) -> Any:
        """The attachment's row, after up to `wait` s for a terminal status; 404 if the agent
        cannot see the message or it has no such attachment (yet)."""
        deadline = time.monotonic() + min(wait, ctx.max_wait)
        while True:
            found = await lookups.attachment(agent_id, message_id, index)
            if found is None:
                raise not_found()
            status, att = found
            remaining = deadline - time.monotonic()
            done = att is not None and att.status in TERMINAL_ATTACHMENT
            if done or remaining <= 0 or (att is None and status not in UNFINISHED):
                break
            await ctx.notifier.wait(min(remaining, 0.25), message_id)
        if att is None:
            if status in UNFINISHED:
                raise ApiError(404, "not_extracted",
                               "the message is not extracted yet; retry or use ?wait=")
            raise not_found("attachment")
        return att

    def ttl(body: DownloadRequest | None) -> float:
        asked = body.expires_in if body and body.expires_in else ctx.presign_ttl
        return float(min(asked, ctx.presign_ttl))

    async def presigned(key: str, expires_in: float, file_name: str, content_type: str,
                        size: int, sha256: str, stored_size: int | None = None,
                        stored_sha256: str | None = None, encrypted: bool = False) -> Response:
        """The DownloadResponse body, built as a dict: the shape is fixed, so no validation."""
        signed = await ctx.store.presign_get(key, expires_in=expires_in, file_name=file_name,
                                             content_type=content_type)
        return JsonBody({"url": signed.url, "expires_at": _iso_ts(signed.expires_at),
                         "file_name": file_name, "content_type": content_type, "size": size,
                         "sha256": sha256, "encrypted": encrypted, "stored_size": stored_size,
                         "stored_sha256": stored_sha256})

    if ctx.metrics is not None:
        metrics = ctx.metrics

        @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
        async def prometheus() -> Response:
            """Prometheus text exposition (no authentication, no content: counts only)."""
            return Response(await metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/healthz", tags=["health"], response_model=Health)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=Readiness, responses={
        503: {"model": Readiness, "description": "The database or the object store does not "
                                                 "answer (`checks` says which)"}})
    async def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            async with ctx.sessions() as session, translated_errors():
                await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
            checks["database"] = "ok"
        except TransientError as e:
            checks["database"] = str(e)
        try:
            await ctx.store.check()
            checks["storage"] = "ok"
        except StorageError as e:
            checks["storage"] = str(e)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                            status_code=200 if ok else 503)

    @app.get("/v1/messages", tags=["messages"], response_model=MessageList,
             responses=authed(400, 422))
    async def list_messages(
        agent_id: AgentId,
        after: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Response:
        """The agent's messages, oldest first (newest last), from a cursor."""
        after_seq = int(after) if after and after.isdigit() and after.isascii() else -1
        if after and not 0 <= after_seq <= MAX_CURSOR:
            raise ApiError(400, "invalid_cursor", "after is not a cursor from this API")
        after_seq = max(after_seq, 0)
        async with ctx.sessions() as session, translated_errors():
            seqs = list((await session.exec(
                select(Recipient.message_seq).distinct()
                .where(Recipient.agent_id == agent_id, col(Recipient.message_seq) > after_seq)
                .order_by(col(Recipient.message_seq)).limit(limit + 1))).all())
            has_more = len(seqs) > limit
            seqs = seqs[:limit]
            by_seq: dict[int, list[Recipient]] = {}
            for r in (await session.exec(select(Recipient).where(
                    Recipient.agent_id == agent_id, col(Recipient.message_seq).in_(seqs)))).all():
                by_seq.setdefault(r.message_seq, []).append(r)
            msgs = {m.seq: m for m in (await session.exec(
                select(Message).where(col(Message.seq).in_(seqs)))).all()}
        items = [message_summary(msgs[s], by_seq[s]) for s in seqs if s in msgs]
        return JsonBody({"messages": items, "next_cursor": str(seqs[-1]) if seqs else after,
                         "has_more": has_more})

    @app.get("/v1/messages/{message_id}", tags=["messages"], response_model=MessageView,
             responses=authed(404, 422))
    async def get_message(agent_id: AgentId, message_id: MessageId) -> Response:
        """One message: envelope, headers of note, bodies, attachments."""
        mine, atts = await load_message(agent_id, message_id, with_attachments=True)
        msg = mine[0]
        bodies: dict[str, str | None] = {"text": None, "html": None}
        for kind, key, size in (("text", msg.text_key, msg.text_size),
                                ("html", msg.html_key, msg.html_size)):
            if key and (size or 0) <= INLINE_BODY_LIMIT:
                try:
                    bodies[kind] = (await ctx.store.get(key)).decode("utf-8", "replace")
                except ObjectNotFound:
                    bodies[kind] = None
        return JsonBody(message_view(msg, mine, atts, bodies["text"], bodies["html"]))

    @app.get("/v1/messages/{message_id}/attachments/{index}", tags=["attachments"],
             response_model=AttachmentStatus, responses=authed(404, 422))
    async def get_attachment_status(
        agent_id: AgentId, message_id: MessageId, index: Index,
        wait: Annotated[float, Query(ge=0, le=30)] = 0,
    ) -> Response:
        """The attachment status object; `?wait=` holds until it is terminal (≤ 30 s)."""
        return JsonBody(attachment_view(await load_attachment(agent_id, message_id, index,
                                                              wait)))

    @app.post("/v1/messages/{message_id}/attachments/{index}/download", tags=["attachments"],
              response_model=DownloadResponse, responses=authed(400, 404, 409, 422))
    async def download_attachment(agent_id: AgentId, message_id: MessageId, index: Index,
                                  body: DownloadRequest | None = None) -> Response:
        """A presigned URL for a `ready` attachment; 409 otherwise."""
        att = await load_attachment(agent_id, message_id, index)
        if att.status != READY or not att.object_key:
            raise ApiError(409, "not_ready", f"attachment is {att.status}, not ready")
        if att.stored_sha256 is not None:  # encrypted at rest: the URL serves OpenPGP armor
            return await presigned(att.object_key, ttl(body), att.file_name, PGP_ENCRYPTED,
                                   att.size, att.sha256, att.stored_size, att.stored_sha256,
                                   encrypted=True)
        return await presigned(att.object_key, ttl(body), att.file_name,
                               download_content_type(att.content_type), att.size, att.sha256)

    @app.post("/v1/messages/{message_id}/raw/download", tags=["messages"],
              response_model=DownloadResponse, responses=authed(400, 404, 409, 422))
    async def download_raw(agent_id: AgentId, message_id: MessageId,
                           body: DownloadRequest | None = None) -> Response:
        """A presigned URL of the raw message as received (with our Received header)."""
        msg = (await load_message(agent_id, message_id))[0][0]
        if msg.status == PURGED:
            raise ApiError(409, "purged", "the message is past retention: its bytes are gone")
        if msg.encrypted_to:
            return await presigned(msg.raw_key, ttl(body), f"{msg.id}.eml.asc", PGP_ENCRYPTED,
                                   msg.size, msg.raw_sha256, encrypted=True)
        return await presigned(msg.raw_key, ttl(body), f"{msg.id}.eml", "message/rfc822",
                               msg.size, msg.raw_sha256)

    if isinstance(ctx.store, LocalStore):
        local: LocalStore = ctx.store

        @app.api_route("/objects/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
        async def signed_object(key: str, request: Request) -> FileResponse:
            # A HEAD is checked against the signature of the GET it stands for.
            signed = local.signer.verify(key, dict(request.query_params))
            if signed is None:
                raise ApiError(403, "forbidden", "the URL is expired or its signature is invalid")
            try:
                path = local.path_for(key)
            except StorageError:
                raise ApiError(403, "forbidden", "invalid object key") from None
            if not path.is_file():
                raise not_found("object")
            return FileResponse(path, media_type=signed.content_type, headers={
                "Content-Disposition": content_disposition(signed.file_name),
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, no-store",
                "Content-Security-Policy": "default-src 'none'; sandbox",
            })

    return app


def _iso_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
