"""The directory (SPEC §12): `GET /v1/directory/{address}`, who an address is and the OpenPGP
key to encrypt to, for local agents and for external addresses an operator registered.

Any agent may ask about any address (it is a key directory, as a keyserver is); an unknown
address answers 404. Nothing is written here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from daemon.api.deps import Caller
from daemon.api.errors import ANY_BODY, authed, not_found
from daemon.api.views import JsonBody
from daemon.outbound import lookup_peer

router = APIRouter(tags=["directory"], responses=ANY_BODY)


class PeerView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str
    local: bool
    openpgp_public_key: str | None
    fingerprint: str | None


@router.get("/v1/directory/{address}", response_model=PeerView, responses=authed(404, 422))
async def get_peer(caller: Caller,
                   address: Annotated[str, Path(min_length=3, max_length=320)]) -> Response:
    """The peer at `address`: `local` when an agent of this postroom owns it, with its armored
    OpenPGP public key when one is known (seed 000's `send_mail(encrypt_…=True)` needs it)."""
    ctx = caller.ctx
    peer = await lookup_peer(ctx.sessions, address)
    if peer is None:
        raise not_found("address")
    return JsonBody({"address": peer.address, "local": peer.local,
                     "openpgp_public_key": peer.openpgp_public_key,
                     "fingerprint": peer.fingerprint})
