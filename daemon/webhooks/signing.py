"""Standard Webhooks signatures (https://www.standardwebhooks.com): the secret, the headers.

A secret is `whsec_` and 32 random bytes in base64; the signature is
`v1,<base64 HMAC-SHA256(secret bytes, "<webhook-id>.<webhook-timestamp>.<body>")>`. While a
rotated-out secret is still honoured, a POST carries one signature per secret, space-separated,
as the spec allows, so a receiver that has not switched yet keeps verifying.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secrets_: Sequence[str], webhook_id: str, timestamp: int,
                   body: bytes) -> dict[str, str]:
    """The three headers of a POST, signed with each of `secrets_` (the current one first)."""
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signature(s, webhook_id, timestamp, body)
                                          for s in secrets_)}
