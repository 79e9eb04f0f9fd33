"""The ASGI app of the HTTP API (SPEC §6): one router per resource (`routes/`), the OpenAPI
document's key schemes, and the one place where an error becomes the SPEC's body.

No route lives here. No answer carries a stack trace: anything unexpected is logged and answers
500 with the error body.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Route

from daemon.api.deps import ApiContext, AppContext
from daemon.api.errors import ApiError, error_body, error_responses
from daemon.api.mcp_mount import PATH as MCP_PATH
from daemon.api.mcp_mount import LazyMcp
from daemon.api.routes import (
    agentpost,
    agentsend,
    attachments,
    directory,
    events,
    health,
    messages,
    objects,
    threads,
    uploads,
    webhooks,
)
from storage.errors import DatabaseError, StorageError

log = structlog.get_logger("postroom.api")

# How agents authenticate (SPEC §6), for the OpenAPI document; `deps.current_agent` reads them.
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "the agent's API key"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "the agent's API key"},
}


# Every route under these takes an agent's key: postroom's own (`/v1`), AgentPost's
# (`/api/v1`) and AgentSend's (SPEC §17).
KEYED_PATHS = ("/v1/", "/api/v1/", "/attachments", "/inboxes")


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the ASGI app around `ctx` (with `/mcp` when `ctx.mcp_hosts` says its hosts; its
    session manager runs in the app's lifespan)."""
    endpoint: LazyMcp | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with endpoint.running() if endpoint else contextlib.nullcontext():
            yield

    # Any request, whatever its route, may carry a body over http.max_body (api/bodylimit.py).
    app = FastAPI(title="postroom", version="0.1.0", docs_url=None, redoc_url=None,
                  responses=error_responses(413), lifespan=lifespan)
    generated_openapi = app.openapi

    def documented_openapi() -> dict[str, Any]:
        """FastAPI's document plus the API-key schemes on every operation that takes one."""
        if app.openapi_schema is None:
            doc = generated_openapi()
            doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in doc["paths"].items():
                if path.startswith(KEYED_PATHS):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
        return app.openapi_schema or {}

    app.openapi = documented_openapi  # type: ignore[method-assign]
    app.exception_handler(ApiError)(_api_error)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(StarletteHTTPException)(_http)
    app.exception_handler(StorageError)(_storage)
    app.exception_handler(Exception)(_unexpected)

    app.state.ctx = state = AppContext.of(ctx)
    routers = [health.router, messages.router, attachments.router, uploads.router,
               threads.router, events.router, webhooks.router, directory.router,
               agentpost.router, agentsend.router]
    if state.metrics is not None:
        routers.insert(0, health.metrics_router)
    if state.store.url_signer is not None:  # the store's URLs are answered here (local store)
        routers.append(objects.router)
    for router in routers:
        # The routes themselves, not `include_router`: FastAPI 0.16x wraps an included router
        # in a matcher of its own that every request walks (3-4 % of /v1 throughput, measured
        # with bench/). The routers add no prefix, dependency or response of their own.
        app.router.routes.extend(router.routes)
    if ctx.mcp_hosts is not None:
        keys = state.keys

        async def known(authorization: str) -> bool:
            key = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
            return bool(key) and await keys.agent_id(key) is not None

        endpoint = LazyMcp(app, known, ctx.mcp_hosts)
        app.router.routes.append(Route(MCP_PATH, endpoint, methods=["GET", "POST", "DELETE"]))
    return app


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status,
                        headers=exc.headers)


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    detail = f"{where}: {first.get('msg', 'invalid')}"
    return JSONResponse(error_body("invalid_request", detail), status_code=422)


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # FastAPI's own 400 is a JSON body it cannot even decode (bytes that are not UTF-8).
    code = {400: "invalid_request", 404: "not_found",
            405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = exc.headers
    if exc.status_code == 405:
        # RFC 9110: Allow names every method of the resource. Starlette names only those of
        # the first route whose path matched (GET and POST /v1/messages are two routes).
        allowed = {method for route in request.app.routes if isinstance(route, BaseRoute)
                   and (regex := getattr(route, "path_regex", None)) is not None
                   and regex.match(request.url.path)
                   for method in (getattr(route, "methods", None) or ())}
        headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                        headers=headers)


async def _storage(request: Request, exc: StorageError) -> JSONResponse:
    log.warning("api.storage_error", path=request.url.path, error=str(exc))
    metrics = request.app.state.ctx.metrics
    if metrics is not None:
        if isinstance(exc, DatabaseError):
            metrics.errors.count_database("api")
        else:
            metrics.errors.count_storage("api")
    return JSONResponse(error_body("unavailable", "storage is unavailable, retry later"),
                        status_code=503)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("api.unexpected_error", path=request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal", "internal error"), status_code=500)

