"""What a presigned download says about its object: a safe served type and a UTF-8 file name.

Both backends (the local store's own URLs and S3's response-* overrides) use these, so a
download behaves the same wherever the bytes live.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from base64 import urlsafe_b64decode, urlsafe_b64encode
from dataclasses import dataclass
from urllib.parse import quote

# Types a browser would render or run: served as opaque bytes so a link can never become a page.
_ACTIVE_TYPES = {
    "text/html", "application/xhtml+xml", "image/svg+xml", "text/javascript",
    "application/javascript", "application/ecmascript", "text/ecmascript", "text/xml",
    "application/xml", "text/xsl", "application/x-shockwave-flash", "text/vtt",
    "multipart/x-mixed-replace", "application/pdf+html",
}
_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def download_content_type(declared: str | None) -> str:
    """The type a download is served with: the declared one unless it is active or malformed."""
    ct = (declared or "").split(";")[0].strip().lower()
    if not _TYPE_RE.fullmatch(ct) or ct in _ACTIVE_TYPES or ct.endswith(("+xml", "script")):
        return "application/octet-stream"
    return ct


def content_disposition(file_name: str) -> str:
    """`attachment` with an ASCII fallback and the exact UTF-8 name (RFC 6266 / RFC 5987)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;%' else "_" for c in file_name)
    encoded = quote(file_name, safe="")
    return f"attachment; filename=\"{ascii_name or 'download'}\"; filename*=UTF-8''{encoded}"


@dataclass(frozen=True)
class SignedGet:
    """The fields of one signed local-store URL."""

    key: str
    expires: int
    file_name: str
    content_type: str


def _b64(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UrlSigner:
    """HMAC-SHA256 over every field of a download URL: the key, the expiry, the name, the type."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("signing key too short")
        self._secret = secret

    def _mac(self, method: str, g: SignedGet) -> str:
        msg = "\n".join([method, g.key, str(g.expires), g.file_name, g.content_type])
        return _b64(hmac.new(self._secret, msg.encode("utf-8"), hashlib.sha256).digest())

    def sign(self, g: SignedGet, method: str = "GET") -> dict[str, str]:
        """Query parameters of a URL for `g`."""
        return {
            "exp": str(g.expires),
            "fn": _b64(g.file_name.encode("utf-8")),
            "ct": g.content_type,
            "sig": self._mac(method, g),
        }

    def verify(self, key: str, params: dict[str, str], method: str = "GET",
               now: float | None = None) -> SignedGet | None:
        """The signed fields if `params` carry a valid, unexpired signature for `key`."""
        try:
            g = SignedGet(
                key=key,
                expires=int(params["exp"]),
                file_name=_unb64(params["fn"]).decode("utf-8"),
                content_type=params["ct"],
            )
            given = params["sig"]
        except (KeyError, ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(self._mac(method, g).encode(), given.encode("utf-8", "replace")):
            return None
        if (time.time() if now is None else now) >= g.expires:
            return None
        return g
