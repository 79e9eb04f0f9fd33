"""Presigned downloads (SPEC §6): the body and the answer of the `…/download` routes of
messages and attachments, and the lifetime every URL the API hands out gets.

A download is a URL the store signs; the API never reads the object's bytes to answer one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from daemon.api.deps import AppContext
from daemon.api.views import JsonBody
from daemon.clock import iso

PGP_ENCRYPTED = "application/pgp-encrypted"
TEXT_PLAIN = "text/plain; charset=utf-8"  # what an attachment's text is served as
ExpiresIn = Annotated[int | None, Field(ge=1, le=7 * 86400)]


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    expires_in: ExpiresIn = None


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


def lifetime(ctx: AppContext, asked: int | None) -> float:
    """How long a URL lives: what the agent asked for, at most storage.presign_ttl."""
    return float(min(asked or ctx.presign_ttl, ctx.presign_ttl))


async def presigned_download(ctx: AppContext, key: str, expires_in: float, file_name: str,
                             content_type: str, size: int, sha256: str,
                             stored_size: int | None = None, stored_sha256: str | None = None,
                             encrypted: bool = False) -> Response:
    """The DownloadResponse of `key`, built as a dict: the shape is fixed, so no validation."""
    signed = await ctx.store.presign_get(key, expires_in=expires_in, file_name=file_name,
                                         content_type=content_type)
    return JsonBody({"url": signed.url, "expires_at": iso(signed.expires_at),
                     "file_name": file_name, "content_type": content_type, "size": size,
                     "sha256": sha256, "encrypted": encrypted, "stored_size": stored_size,
                     "stored_sha256": stored_sha256})
