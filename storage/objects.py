"""The object store interface: one protocol, a local and an S3 implementation.

The pipeline and the API only see `ObjectStore`; they never know which backend they hold.
Keys are built by `object_keys`, from ids only: never from a name found in a message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from storage.errors import InvalidKey
from storage.presign import UrlSigner

UPLOADS = "uploads"
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_SLUG_MAX = 100

# Keys are ours: ids, fixed words, digits, dots, dashes and slashes. No "..", no leading "/".
_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")


def check_key(key: str) -> str:
    """Return `key` if it is a well-formed object key, else raise InvalidKey."""
    if len(key) > 900 or not _KEY_RE.fullmatch(key) or ".." in key.split("/") or "/../" in key:
        raise InvalidKey(f"invalid object key {key[:80]!r}")
    if any(seg in (".", "..") for seg in key.split("/")):
        raise InvalidKey(f"invalid object key {key[:80]!r}")
    return key


@dataclass(frozen=True)
class StoredObject:
    """One object as a listing shows it: its key and when it was last written (unix seconds)."""

    key: str
    modified: float


@dataclass(frozen=True)
class PresignedGet:
    """A URL that fetches one object until `expires_at` (unix seconds)."""

    url: str
    expires_at: float


@dataclass(frozen=True)
class PresignedPost:
    """A form to POST one file with: `url`, the `fields` to send before the file, `expires_at`."""

    url: str
    fields: dict[str, str]
    expires_at: float


class ObjectStore(Protocol):
    """Where raw messages, bodies and attachments live."""

    async def put(self, key: str, data: bytes,
                  content_type: str = "application/octet-stream") -> None:
        """Store `data` durably under `key`; returns only once it would survive a crash."""

    async def put_files(self, items: Sequence[tuple[str, Path]]) -> None:
        """Store each `(key, file)` durably, consuming the files (moved or uploaded, then gone).

        The files are spool files in `spool_dir`, which the store owns.
        """

    @property
    def spool_dir(self) -> Path:
        """Where bytes on their way into this store are spooled."""

    def local_path(self, key: str) -> Path | None:
        """A file other processes may read the object from, or None if there is none;
        InvalidKey for a key that is not well formed or leads out of the store."""

    @property
    def url_signer(self) -> UrlSigner | None:
        """The signer of the URLs this store hands out that the daemon must answer itself
        (`/objects/…`: downloads, PUT uploads, POST forms), None when the store answers its
        own URLs (S3)."""

    async def get(self, key: str) -> bytes:
        """Return the object's bytes; ObjectNotFound when absent."""

    async def get_file(self, key: str, dest: Path) -> None:
        """Write the object to the local file `dest` in bounded memory; ObjectNotFound when absent.

        `dest` is created or truncated; on any failure it is removed, never left half-written.
        """

    async def delete(self, key: str) -> None:
        """Remove the object; absent objects are not an error."""

    async def exists(self, key: str) -> bool:
        """True when an object is stored under `key`."""

    async def list_keys(self, prefix: str, start_after: str = "",
                        limit: int = 1000) -> list[StoredObject]:
        """Up to `limit` objects under the folder `prefix` ("raw/"), in key order, each key
        greater than `start_after`: page on with the last key returned."""

    async def presign_get(
        self, key: str, *, expires_in: float, file_name: str, content_type: str
    ) -> PresignedGet:
        """A URL that serves the object as a download named `file_name`."""

    async def size(self, key: str) -> int | None:
        """The stored object's size in bytes, None when there is no object under `key`."""

    async def presign_post(self, key: str, *, expires_in: float, content_type: str,
                           max_bytes: int) -> PresignedPost:
        """A form that stores one file of `content_type` and at most `max_bytes` under `key`."""

    async def presign_put(self, key: str, *, expires_in: float, content_type: str,
                          size: int) -> PresignedGet:
        """A URL that stores, by PUT, exactly `size` bytes of `content_type` under `key`."""

    async def check(self) -> None:
        """Raise TransientError when the store does not answer (readiness)."""

    async def close(self) -> None:
        """Release connections and threads."""


def raw_key(message_id: str) -> str:
    """Key of a message's raw bytes."""
    return f"raw/{message_id}.eml"


def attachment_key(message_id: str, index: int) -> str:
    """Key of one extracted attachment."""
    return f"inbound/{message_id}/{index}"


def attachment_text_key(message_id: str, index: int) -> str:
    """Key of the text read from one attachment (SPEC §15)."""
    return f"inbound/{message_id}/{index}.txt"


_BODIES = {"text": "body.txt", "html": "body.html", "extracted": "extracted.txt"}


def body_key(message_id: str, kind: str) -> str:
    """Key of the text or html body, or of the text's new part (`extracted`)."""
    return f"inbound/{message_id}/{_BODIES[kind]}"


def uploads_prefix(agent_id: str) -> str:
    """Where an agent's uploads live: every key under it is the agent's own."""
    return f"{UPLOADS}/{check_key(agent_id)}/"


def upload_key(agent_id: str, unique: str, file_name: str) -> str:
    """`uploads/<agent_id>/<unique>-<slug>`: the slug is the name cut down to ASCII letters,
    digits, `_`, `.` and `-` (at most 100), so no name a client sends reaches a path as is."""
    slug = _SLUG_UNSAFE.sub("_", file_name).strip("._-")[:_SLUG_MAX].strip("._-") or "file"
    return check_key(f"{uploads_prefix(agent_id)}{unique}-{slug}")
