"""Attachments (SPEC §6, §15): an inbound attachment's status object (with a long poll until it
is terminal), its presigned download, its text, and any attachment the agent may see by id (or
its upload).

An attachment of a message not addressed to the agent answers 404, exactly as a missing one, and
a `?wait=` never waits on what is not the agent's.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from daemon.api.deps import AppContext, Caller, Index, MessageId
from daemon.api.downloads import (
    PGP_ENCRYPTED,
    TEXT_PLAIN,
    DownloadRequest,
    DownloadResponse,
    lifetime,
    presigned_download,
)
from daemon.api.errors import ANY_BODY, ApiError, authed, not_found
from daemon.api.upload_records import own_upload, upload_link
from daemon.api.views import (
    AttachmentStatus,
    InboundAttachment,
    JsonBody,
    UploadObject,
    attachment_view,
    upload_view,
)
from storage.errors import ObjectNotFound
from storage.models import READY, TERMINAL_ATTACHMENT, UNFINISHED
from storage.objects import PresignedGet
from storage.presign import download_content_type

router = APIRouter(tags=["attachments"], responses=ANY_BODY)

AttachmentId = Annotated[str, PathParam(min_length=1, max_length=64)]


async def load_attachment(ctx: AppContext, agent_id: str, message_id: str, index: int,
                          wait: float = 0.0) -> Any:
    """The attachment's row, after up to `wait` s for a terminal status; 404 if the agent
    cannot see the message or it has no such attachment (yet)."""
    deadline = time.monotonic() + min(wait, ctx.max_wait)
    while True:
        found = await ctx.lookups.attachment(agent_id, message_id, index)
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


@router.get("/v1/messages/{message_id}/attachments/{index}", response_model=AttachmentStatus,
            responses=authed(404, 422))
async def get_attachment_status(
    caller: Caller, message_id: MessageId, index: Index,
    wait: Annotated[float, Query(ge=0, le=30)] = 0,
) -> Response:
    """The attachment status object; `?wait=` holds until it is terminal (≤ 30 s)."""
    agent_id, ctx = caller.agent_id, caller.ctx
    return JsonBody(attachment_view(await load_attachment(ctx, agent_id, message_id, index,
                                                          wait)))


@router.post("/v1/messages/{message_id}/attachments/{index}/download",
             response_model=DownloadResponse, responses=authed(400, 404, 409, 422))
async def download_attachment(caller: Caller, message_id: MessageId, index: Index,
                              body: DownloadRequest | None = None) -> Response:
    """A presigned URL for a `ready` attachment; 409 otherwise."""
    agent_id, ctx = caller.agent_id, caller.ctx
    att = await load_attachment(ctx, agent_id, message_id, index)
    if att.status != READY or not att.object_key:
        raise ApiError(409, "not_ready", f"attachment is {att.status}, not ready")
    expires_in = lifetime(ctx, body.expires_in if body else None)
    if att.stored_sha256 is not None:  # encrypted at rest: the URL serves OpenPGP armor
        return await presigned_download(ctx, att.object_key, expires_in, att.file_name,
                                        PGP_ENCRYPTED, att.size, att.sha256, att.stored_size,
                                        att.stored_sha256, encrypted=True)
    return await presigned_download(ctx, att.object_key, expires_in, att.file_name,
                                    download_content_type(att.content_type), att.size,
                                    att.sha256)


@router.get("/v1/messages/{message_id}/attachments/{index}/text",
            response_class=Response, responses={
                **authed(404, 409, 422),
                200: {"content": {TEXT_PLAIN: {}}, "description": "the attachment's text"}})
async def get_attachment_text(
    caller: Caller, message_id: MessageId, index: Index,
    wait: Annotated[float, Query(ge=0, le=30)] = 0,
) -> Response:
    """The attachment's text (SPEC §15), `text/plain; charset=utf-8`, when its `text_status`
    is `ready`; 409 otherwise (`not_ready` while it is pending, `no_text` with the status
    and why). `X-Text-Truncated: true` when it was cut at `content.max_text_chars` or
    `content.max_pages`. For an agent whose mail is encrypted at rest, the text is the
    armored OpenPGP message (`X-Encrypted: openpgp`). `?wait=` holds until the attachment is
    terminal (≤ 30 s)."""
    agent_id, ctx = caller.agent_id, caller.ctx
    att = await load_attachment(ctx, agent_id, message_id, index, wait)
    if att.status not in TERMINAL_ATTACHMENT:
        raise ApiError(409, "not_ready", f"attachment is {att.status}: retry or use ?wait=")
    if att.text_status != READY or not att.text_key:
        why = f": {att.text_error}" if att.text_error else ""
        raise ApiError(409, "no_text", f"the attachment's text is {att.text_status}{why}")
    try:
        data = await ctx.store.get(att.text_key)
    except ObjectNotFound:  # purged past retention
        raise ApiError(409, "no_text", "the attachment's text is gone (retention)") from None
    headers = {"X-Text-Truncated": "true" if att.text_truncated else "false"}
    if att.stored_sha256 is not None:
        headers["X-Encrypted"] = "openpgp"
    return Response(data, media_type=TEXT_PLAIN, headers=headers)


@router.get("/v1/attachments/{attachment_id}", response_model=InboundAttachment | UploadObject,
            responses=authed(404, 422))
async def get_attachment(caller: Caller, attachment_id: AttachmentId) -> Response:
    """An inbound attachment (`att_…`) of a message addressed to the agent, or one of its
    uploads (`upl_…`), with a fresh download `url` when it is ready."""
    return JsonBody((await attachment_by_id(caller.ctx, caller.agent_id, attachment_id))[0])


async def attachment_by_id(ctx: AppContext, agent_id: str, attachment_id: str
                           ) -> tuple[dict[str, Any], PresignedGet | None]:
    """The view of an inbound attachment the agent may see or of one of its uploads, with
    `url` set, and the link behind that url (None until ready); 404 otherwise."""
    if attachment_id.startswith("upl_"):
        row = await own_upload(ctx, agent_id, id=attachment_id)
        link = await upload_link(ctx, row, ctx.presign_ttl)
        return upload_view(row, link.url if link else None), link
    att = await ctx.lookups.attachment_by_id(agent_id, attachment_id)
    if att is None:
        raise not_found("attachment")
    view = attachment_view(att)
    link = None
    if att.status == READY and att.object_key:
        link = await ctx.store.presign_get(
            att.object_key, expires_in=ctx.presign_ttl, file_name=att.file_name,
            content_type=download_content_type(att.content_type))
    view["url"] = link.url if link else None
    return view, link
