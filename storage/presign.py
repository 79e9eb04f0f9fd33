"""What a presigned URL says about its object: a safe served type and a UTF-8 file name, and
the local store's own signatures (downloads, PUT uploads, POST upload policies).

Both backends (the local store's own URLs and S3's response-* overrides) use these, so a
download behaves the same wherever the bytes live. Every signature is an HMAC-SHA256 compared in
constant time; nothing a client sends is trusted before its signature checks out.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import re
import time
from base64 import b64decode, b64encode, urlsafe_b64decode, urlsafe_b64encode
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
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


@dataclass(frozen=True)
class SignedPut:
    """The fields of one signed local-store PUT URL: the upload must match all of them."""

    key: str
    expires: int
    content_type: str
    size: int


@dataclass(frozen=True)
class PostPolicy:
    """What a presigned POST form allows: one key, one type, a size range, until `expires`."""

    key: str
    expires: int
    content_type: str
    max_bytes: int
    min_bytes: int = 0

    def document(self) -> str:
        """The policy as S3 writes it: base64 of a JSON document of conditions."""
        doc = {
            "expiration": datetime.fromtimestamp(self.expires, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
            "conditions": [{"key": self.key}, {"Content-Type": self.content_type},
                           ["content-length-range", self.min_bytes, self.max_bytes]],
        }
        return b64encode(json.dumps(doc).encode("utf-8")).decode("ascii")

    @classmethod
    def parse(cls, document: str) -> PostPolicy | None:
        """The policy a document of `document()` describes; None if it is not one."""
        try:
            doc = json.loads(b64decode(document, validate=True))
            expires = datetime.strptime(doc["expiration"], "%Y-%m-%dT%H:%M:%SZ")
            key = content_type = None
            low = high = None
            for cond in doc["conditions"]:
                if isinstance(cond, dict) and set(cond) == {"key"}:
                    key = cond["key"]
                elif isinstance(cond, dict) and set(cond) == {"Content-Type"}:
                    content_type = cond["Content-Type"]
                elif isinstance(cond, list) and cond[:1] == ["content-length-range"]:
                    low, high = int(cond[1]), int(cond[2])
        except (ValueError, TypeError, KeyError, IndexError, binascii.Error):
            return None
        if not (isinstance(key, str) and isinstance(content_type, str)
                and low is not None and high is not None):
            return None
        return cls(key, int(expires.replace(tzinfo=UTC).timestamp()), content_type, high, low)


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
        return self._mac_of(method, g.key, str(g.expires), g.file_name, g.content_type)

    def _mac_of(self, *fields: str) -> str:
        msg = "\n".join(fields)
        return _b64(hmac.new(self._secret, msg.encode("utf-8"), hashlib.sha256).digest())

    def _matches(self, expected: str, given: Any) -> bool:
        return isinstance(given, str) and hmac.compare_digest(
            expected.encode(), given.encode("utf-8", "replace"))

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
        if not self._matches(self._mac(method, g), given):
            return None
        if (time.time() if now is None else now) >= g.expires:
            return None
        return g

    def sign_put(self, p: SignedPut) -> dict[str, str]:
        """Query parameters of a PUT URL that accepts exactly `p`'s type and size."""
        return {"exp": str(p.expires), "ct": p.content_type, "len": str(p.size),
                "sig": self._mac_of("PUT", p.key, str(p.expires), p.content_type, str(p.size))}

    def verify_put(self, key: str, params: dict[str, str],
                   now: float | None = None) -> SignedPut | None:
        """The signed fields if `params` carry a valid, unexpired PUT signature for `key`."""
        try:
            p = SignedPut(key, int(params["exp"]), params["ct"], int(params["len"]))
            given = params["sig"]
        except (KeyError, ValueError):
            return None
        expected = self._mac_of("PUT", p.key, str(p.expires), p.content_type, str(p.size))
        if not self._matches(expected, given):
            return None
        if (time.time() if now is None else now) >= p.expires:
            return None
        return p

    def sign_policy(self, document: str) -> str:
        """The signature of a POST policy document (the base64 text, as the form carries it)."""
        return self._mac_of("POST", document)

    def verify_policy(self, document: Any, signature: Any,
                      now: float | None = None) -> PostPolicy | None:
        """The policy if `signature` is ours for `document` and it has not expired."""
        if not isinstance(document, str) or not self._matches(self.sign_policy(document),
                                                               signature):
            return None
        policy = PostPolicy.parse(document)
        if policy is None or (time.time() if now is None else now) >= policy.expires:
            return None
        return policy
