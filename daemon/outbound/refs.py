"""What an agent may attach or answer when it sends: its own uploads, inbound attachments and
messages addressed to it (SPEC §12), resolved to rows and bytes.

A ref the agent may not see is refused exactly as a missing one (`NotVisible`, 404), one whose
bytes are not there yet with `NotReady` (409). Names and types from the request override the
stored ones but pass the same checks as every name from mail: nothing here builds a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.outbound.compose import FilePart
from extractors.filenames import safe_file_name
from storage.errors import ObjectNotFound
from storage.models import READY, Attachment, Message, Recipient, Upload
from storage.objects import ObjectStore

UPLOADS: Any = Upload.__table__  # type: ignore[attr-defined]
ATTACHMENTS: Any = Attachment.__table__  # type: ignore[attr-defined]
MESSAGES: Any = Message.__table__  # type: ignore[attr-defined]
RECIPIENTS: Any = Recipient.__table__  # type: ignore[attr-defined]
PGP_ENCRYPTED = "application/pgp-encrypted"


class NotVisible(LookupError):
    """No such ref for this agent (whether it exists for another agent is not said)."""

    def __init__(self, ref: str) -> None:
        super().__init__(ref)
        self.ref = ref


class NotReady(Exception):
    """The ref exists but its bytes are not stored (yet, or any more)."""

    def __init__(self, ref: str, status: str) -> None:
        super().__init__(ref)
        self.ref, self.status = ref, status


@dataclass(frozen=True)
class AttachmentRef:
    object_key: str | None = None
    id: str | None = None
    file_name: str | None = None
    content_type: str | None = None

    @property
    def label(self) -> str:
        return self.id or self.object_key or "?"


@dataclass(frozen=True)
class Resolved:
    """A ref found: the stored object and how the message will name it."""

    object_key: str
    file_name: str
    content_type: str
    size: int  # -1 while unknown (an upload not seen in the store yet)


async def resolve_ref(conn: AsyncConnection, agent_id: str, ref: AttachmentRef) -> Resolved:
    """The stored object behind `ref`, or `NotVisible` / `NotReady`."""
    if ref.id is not None and ref.id.startswith("att_"):
        row = (await conn.execute(
            select(ATTACHMENTS).join(RECIPIENTS, RECIPIENTS.c.message_id ==
                                     ATTACHMENTS.c.message_id)
            .where(ATTACHMENTS.c.id == ref.id, RECIPIENTS.c.agent_id == agent_id)
            .limit(1))).first()
        if row is None:
            raise NotVisible(ref.label)
        if row.status != READY or not row.object_key:
            raise NotReady(ref.label, row.status)
        name, ctype = row.file_name, row.content_type
        if row.stored_sha256 is not None:  # encrypted at rest: what is stored is OpenPGP armor
            name, ctype = f"{name}.asc", PGP_ENCRYPTED
        size = row.stored_size if row.stored_size is not None else row.size
        return _named(ref, row.object_key, name, ctype, int(size))
    where = (UPLOADS.c.id == ref.id) if ref.id is not None else (
        UPLOADS.c.object_key == ref.object_key)
    row = (await conn.execute(select(UPLOADS).where(where, UPLOADS.c.agent_id == agent_id))
           ).first()
    if row is None:
        raise NotVisible(ref.label)
    # A presigned upload stays `pending` until someone looks: its bytes decide (`load_files`).
    return _named(ref, row.object_key, row.file_name, row.content_type,
                  -1 if row.size is None else int(row.size))


def _named(ref: AttachmentRef, key: str, name: str, ctype: str, size: int) -> Resolved:
    file_name = safe_file_name(ref.file_name, 0, ctype) if ref.file_name else name
    return Resolved(key, file_name, ref.content_type or ctype, size)


async def load_files(store: ObjectStore, refs: list[Resolved], label: list[str]) -> list[FilePart]:
    """The bytes of each resolved ref; a missing object is `NotReady` (a pending upload whose
    bytes never came, or a purged attachment)."""
    files = []
    for found, name in zip(refs, label, strict=True):
        try:
            data = await store.get(found.object_key)
        except ObjectNotFound:
            raise NotReady(name, "pending") from None
        files.append(FilePart(found.file_name, found.content_type, data))
    return files


async def visible_message(conn: AsyncConnection, agent_id: str, message_id: str) -> Any:
    """The row of a message addressed to (or sent by) the agent; `NotVisible` otherwise."""
    row = (await conn.execute(
        select(MESSAGES).join(RECIPIENTS, RECIPIENTS.c.message_id == MESSAGES.c.id)
        .where(MESSAGES.c.id == message_id, RECIPIENTS.c.agent_id == agent_id).limit(1))
    ).first()
    if row is None:
        raise NotVisible(message_id)
    return row
