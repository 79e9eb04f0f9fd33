"""Webhooks (SPEC §14): an agent's endpoints, their secrets, the attempts log, replay.

The work is `daemon.webhooks.Endpoints`'; these routes validate, call it with the caller's
agent id (another agent's webhook answers 404) and shape the answer.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from daemon.api.deps import Caller, cursor_after
from daemon.api.errors import ANY_BODY, ApiError, authed, not_found
from daemon.api.views import JsonBody
from daemon.events import EVENT_TYPES
from daemon.webhooks import Endpoints, WebhookRefused

router = APIRouter(tags=["webhooks"], responses=ANY_BODY)

WebhookId = Annotated[str, Path(min_length=1, max_length=64)]
Url = Annotated[str, Field(min_length=8, max_length=2048)]
EventTypes = Annotated[list[str], Field(min_length=1, max_length=len(EVENT_TYPES))]
Description = Annotated[str, Field(max_length=500)]


class NewWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url
    event_types: EventTypes | None = None  # None: every type
    description: Description | None = None


class WebhookChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = None


class Replay(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: str = Field(max_length=32)


class WebhookObject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    url: str
    event_types: list[str] | None  # None: every type
    description: str | None
    enabled: bool
    disabled_reason: str | None  # "gone" (410), "failing" (disable_after), "manual"
    failing_since: str | None
    cursor: str  # the last event given to this endpoint
    created_at: str
    updated_at: str
    secret: str | None = None  # only when created and when rotated


class WebhookList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhooks: list[WebhookObject]


class AttemptObject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    event_id: str
    cursor: str
    attempt: int
    status: str  # the delivery after this attempt: pending (will retry), delivered, failed
    status_code: int | None  # None: no answer (refused, timed out, address not allowed)
    duration_ms: int
    error: str | None
    response: str | None  # the first kB of the answer's body
    attempted_at: str


class AttemptList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deliveries: list[AttemptObject]
    has_more: bool
    next_before: str | None


class ReplayAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queued: int
    next_cursor: str
    has_more: bool


def _endpoints(caller: Caller) -> Endpoints:
    if caller.ctx.webhooks is None:
        raise ApiError(503, "unavailable", "webhooks are not available on this node")
    return caller.ctx.webhooks


async def _call(work: Any) -> Any:
    try:
        found = await work
    except WebhookRefused as e:
        raise ApiError(e.status, e.code, e.message) from None
    if found is None:
        raise not_found("webhook")
    return found


@router.post("/v1/webhooks", status_code=201, response_model=WebhookObject,
             responses=authed(400, 409, 422))
async def create_webhook(caller: Caller, body: NewWebhook) -> Response:
    """A new endpoint for this agent's events (all types unless `event_types` names some).
    The answer's `secret` is shown this once: verify each POST's `webhook-signature` with it."""
    view = await _call(_endpoints(caller).create(caller.agent_id, body.url, body.event_types,
                                                 body.description))
    return JsonBody(view, status_code=201)


@router.get("/v1/webhooks", response_model=WebhookList, responses=authed())
async def list_webhooks(caller: Caller) -> Response:
    """This agent's endpoints, oldest first (without their secrets)."""
    return JsonBody({"webhooks": await _endpoints(caller).of_agent(caller.agent_id)})


@router.get("/v1/webhooks/{webhook_id}", response_model=WebhookObject, responses=authed(404))
async def get_webhook(caller: Caller, webhook_id: WebhookId) -> Response:
    return JsonBody(await _call(_endpoints(caller).get(caller.agent_id, webhook_id)))


@router.patch("/v1/webhooks/{webhook_id}", response_model=WebhookObject,
              responses=authed(400, 404, 422))
async def change_webhook(caller: Caller, webhook_id: WebhookId, body: WebhookChange
                         ) -> Response:
    """Change `url`, `event_types`, `description` or `enabled`. Disabling fails the pending
    deliveries; enabling starts from the next event (`replay` sends the ones in between)."""
    changes = body.model_dump(exclude_unset=True)
    if any(changes.get(k, "") is None for k in ("url", "enabled")):
        raise ApiError(422, "invalid_request", "url and enabled cannot be null")
    return JsonBody(await _call(_endpoints(caller).change(caller.agent_id, webhook_id,
                                                          changes)))


@router.delete("/v1/webhooks/{webhook_id}", status_code=204, responses=authed(404))
async def delete_webhook(caller: Caller, webhook_id: WebhookId) -> Response:
    """The endpoint, its pending deliveries and its log are gone."""
    await _call(_endpoints(caller).delete(caller.agent_id, webhook_id))
    return Response(status_code=204)


@router.post("/v1/webhooks/{webhook_id}/rotate-secret", response_model=WebhookObject,
             responses=authed(404))
async def rotate_secret(caller: Caller, webhook_id: WebhookId) -> Response:
    """A new `secret` (shown once). For 24 hours each POST carries a signature with the old
    secret too, so a receiver can switch without missing one."""
    return JsonBody(await _call(_endpoints(caller).rotate_secret(caller.agent_id, webhook_id)))


@router.get("/v1/webhooks/{webhook_id}/deliveries", response_model=AttemptList,
            responses=authed(404, 422))
async def list_attempts(caller: Caller, webhook_id: WebhookId,
                        limit: Annotated[int, Query(ge=1, le=500)] = 100,
                        before: Annotated[int | None, Query(ge=1, le=2**62)] = None
                        ) -> Response:
    """The attempts of this endpoint's deliveries, newest first (kept `webhooks.log_for`):
    time, status code, duration, error. `before=<next_before>` pages on."""
    rows, more = await _call(_endpoints(caller).attempts(caller.agent_id, webhook_id, limit,
                                                         before))
    return JsonBody({"deliveries": rows, "has_more": more,
                     "next_before": rows[-1]["id"] if more else None})


@router.post("/v1/webhooks/{webhook_id}/replay", status_code=202, response_model=ReplayAnswer,
             responses=authed(400, 404, 409, 422))
async def replay(caller: Caller, webhook_id: WebhookId, body: Replay) -> Response:
    """Deliver again the events after cursor `after` that this endpoint wants (at most
    10,000 a call: while `has_more`, call again with `after=<next_cursor>`)."""
    after = cursor_after(body.after)
    return JsonBody(await _call(_endpoints(caller).replay(caller.agent_id, webhook_id, after)),
                    status_code=202)
