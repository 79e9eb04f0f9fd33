"""Health (SPEC §6, §9): liveness (`/healthz`), readiness (`/readyz`: the database and the object
store answer) and the Prometheus text (`/metrics`, mounted only when the daemon keeps metrics).

No key is asked for and no content is shown: states and counts only.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from sqlalchemy import text

from daemon.api.deps import Ctx
from daemon.api.errors import ANY_BODY, not_found
from daemon.ops import METRICS_CONTENT_TYPE
from storage.db import translated_errors
from storage.errors import StorageError, TransientError

router = APIRouter(tags=["health"], responses=ANY_BODY)
metrics_router = APIRouter(tags=["health"], responses=ANY_BODY)


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


@metrics_router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(ctx: Ctx) -> Response:
    """Prometheus text exposition (no authentication, no content: counts only)."""
    if ctx.metrics is None:  # not mounted then
        raise not_found("metrics")
    return Response(await ctx.metrics.render(), media_type=METRICS_CONTENT_TYPE)


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={
    503: {"model": Readiness, "description": "The database or the object store does not "
                                             "answer (`checks` says which)"}})
async def readyz(ctx: Ctx) -> JSONResponse:
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
