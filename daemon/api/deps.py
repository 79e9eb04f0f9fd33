"""What a route asks FastAPI for: the agent its key belongs to with the app's context
(`Caller`), the context alone (`Ctx`, for routes without a key), and the parameters several
routers share.

`create_app` puts one `AppContext` on `app.state`; the dependencies only read it, so no route
reaches a global or a closure. Nothing here answers a request, except `current_agent`'s 401.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.api.errors import ApiError
from daemon.api.keycache import MAX_TTL, KeyCache
from daemon.api.lookups import Lookups
from daemon.events import MAX_CURSOR, Wakeups
from daemon.ops import Metrics
from daemon.outbound import Outbox
from daemon.webhooks import Endpoints
from storage.objects import ObjectStore
from storage.spool import Spooler

# The threshold of the spool uploads use when the daemon gives none (smtp.spool_threshold's).
UPLOAD_SPOOL_THRESHOLD = 256 * 1024


@dataclass
class ApiContext:
    """What the daemon gives the API."""

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
    spooler: Spooler | None = None  # None: uploads spool in one made on the store's spool_dir
    outbox: Outbox | None = None  # None: POST /v1/messages answers 503
    webhooks: Endpoints | None = None  # None: /v1/webhooks answers 503
    mcp_hosts: tuple[str, ...] | None = None  # the Host values /mcp answers; None: no /mcp
    # Waits until what this node queued for the search index is in it; None: search the
    # index as it is.
    search_caught_up: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class AppContext:
    """What every route reads: the daemon's `ApiContext` with each default made, once, by
    `create_app`."""

    sessions: async_sessionmaker[AsyncSession]
    store: ObjectStore
    notifier: Wakeups  # a message's state changed (what `?wait=` on an attachment waits for)
    events: Wakeups  # the event feed has new rows
    lookups: Lookups
    keys: KeyCache
    spooler: Spooler
    presign_ttl: float
    max_wait: float
    upload_max_bytes: int
    metrics: Metrics | None
    outbox: Outbox | None
    webhooks: Endpoints | None
    search_caught_up: Callable[[], Awaitable[None]] | None

    @classmethod
    def of(cls, ctx: ApiContext) -> AppContext:
        lookups = ctx.lookups or Lookups(ctx.sessions.kw["bind"])
        return cls(
            sessions=ctx.sessions, store=ctx.store, notifier=ctx.notifier,
            events=ctx.events or Wakeups(), lookups=lookups,
            keys=KeyCache(lookups.agent_id_for_key_hash, ctx.key_cache_ttl),
            spooler=ctx.spooler or Spooler(ctx.store.spool_dir, UPLOAD_SPOOL_THRESHOLD),
            presign_ttl=ctx.presign_ttl, max_wait=ctx.max_wait,
            upload_max_bytes=ctx.upload_max_bytes, metrics=ctx.metrics, outbox=ctx.outbox,
            webhooks=ctx.webhooks, search_caught_up=ctx.search_caught_up)


# Every dependency is a coroutine: FastAPI runs a plain function in a thread, a hop per request.

async def context(request: Request) -> AppContext:
    """The context of the app that serves `request`."""
    ctx: AppContext = request.app.state.ctx
    return ctx


@dataclass(frozen=True, slots=True)
class Calling:
    """Who is asking and the context to answer with: what an authenticated route needs."""

    agent_id: str
    ctx: AppContext


async def current_caller(request: Request) -> Calling:
    """The agent the request's key belongs to, with the app's context, as one dependency: each
    dependency FastAPI solves costs about 10 µs of a request's 230 (4 % of /v1 throughput)."""
    return Calling(await current_agent(request), request.app.state.ctx)


async def current_agent(request: Request) -> str:
    """The id of the agent whose key the request carries; 401 otherwise, also when it carries
    two different keys (Bearer and X-API-Key): which one was meant is a guess."""
    given = {v[7:].strip() for v in request.headers.getlist("authorization")
             if v[:7].lower() == "bearer "}
    given.update(request.headers.getlist("x-api-key"))
    given.discard("")
    if len(given) > 1:
        raise ApiError(401, "unauthorized", "two different API keys")
    if not given:
        raise ApiError(401, "unauthorized", "missing API key")
    keys: KeyCache = request.app.state.ctx.keys
    agent_id = await keys.agent_id(given.pop())
    if agent_id is None:
        raise ApiError(401, "unauthorized", "invalid API key")
    return agent_id


Caller = Annotated[Calling, Depends(current_caller)]  # every route that takes a key
Ctx = Annotated[AppContext, Depends(context)]  # the routes that take none (health, objects)

MessageId = Annotated[str, Path(min_length=1, max_length=64)]
Index = Annotated[int, Path(ge=0, le=2**31 - 1)]


def cursor_after(after: str | None) -> int:
    """The sequence number a list's `after` names (0 for the start); 400 for anything that is
    not a cursor this API gave out."""
    seq = int(after) if after and after.isascii() and after.isdigit() else -1
    if after and not 0 <= seq <= MAX_CURSOR:
        raise ApiError(400, "invalid_cursor", "after is not a cursor from this API")
    return max(seq, 0)
