"""Accepting one message: the raw object made durable, then its row committed, then 250.

This is the durability rule of SPEC §4 in code. The raw bytes go to the object store first (a
crash then leaves at most an orphan object no reader sees), the message and recipient rows are
committed second, and only then does the caller say 250. Redelivery of identical bytes to the
same recipients within the dedupe window returns the first message's id and writes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
from sqlalchemy import Connection, bindparam
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.agents import utcnow
from daemon.directory import Resolved
from daemon.events import Wakeups, event_rows, record_events
from daemon.extract_worker import Extracted
from daemon.ids import new_message_id
from daemon.openpgp import OpenPgp
from daemon.pipeline.jobs import Lease
from daemon.pipeline.pool import remove_files
from daemon.pipeline.results import Outcome, Stored, attachment_rows, message_values, result_events
from storage.db import commit_in_order, insert_ignoring_conflicts, translated_errors
from storage.errors import TransientError
from storage.group_commit import GroupCommit
from storage.models import PROCESSING, RECEIVED, Attachment, Message, Recipient
from storage.objects import ObjectStore, attachment_key, body_key, raw_key
from storage.spool import Spool, Spooled, Spooler, spool_name

log = structlog.get_logger("postroom.ingest")

MESSAGES = Message.__table__  # type: ignore[attr-defined]
RECIPIENTS = Recipient.__table__  # type: ignore[attr-defined]
ATTACHMENTS = Attachment.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Delivery:
    """The envelope of one SMTP transaction, as accepted at RCPT."""

    mail_from: str
    recipients: tuple[Resolved, ...]
    peer: str
    helo: str
    protocol: str  # "ESMTP", "SMTP" or "LMTP" for the Received header


@dataclass(frozen=True)
class Accepted:
    message_id: str
    duplicate: bool


def dedupe_key(body_sha256: str, recipients: Sequence[Resolved]) -> str:
    """SHA-256 over the digest of the bytes as received and the sorted envelope recipients."""
    h = hashlib.sha256(body_sha256.encode("ascii"))
    for addr in sorted({r.address for r in recipients}):
        h.update(b"\x00" + addr.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass
class Incoming:
    """A message while its DATA arrives: its id is chosen and its trace header written first."""

    message_id: str
    spool: Spool


def _header_safe(text: str, limit: int = 200) -> str:
    return "".join(c for c in text if 32 < ord(c) < 127 and c not in "()[]<>;")[:limit] or "unknown"


def received_header(delivery: Delivery, hostname: str, message_id: str, when: float) -> bytes:
    """Our trace header (RFC 5321 §4.4), folded, ending in CRLF."""
    peer_ip = delivery.peer.rsplit(":", 1)[0].strip("[]") if delivery.peer else "unknown"
    lines = [f"Received: from {_header_safe(delivery.helo)} ([{_header_safe(peer_ip, 64)}])",
             f"\tby {_header_safe(hostname)} (postroom) with {delivery.protocol} id {message_id}"]
    if len(delivery.recipients) == 1:
        lines.append(f"\tfor <{_header_safe(delivery.recipients[0].address, 320)}>")
    lines[-1] += "; " + format_datetime(datetime.fromtimestamp(when, UTC))
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


_INSERTS: dict[tuple[str, tuple[str, ...]], Any] = {}
_RECIPIENT_INSERT = RECIPIENTS.insert()
_ATTACHMENT_INSERT = ATTACHMENTS.insert()


def _message_insert(conn: Connection, columns: tuple[str, ...]) -> Any:
    """`INSERT … ON CONFLICT DO NOTHING RETURNING seq` with bound parameters, built once per
    dialect and column set: building and coercing the statement per message cost as much as
    running it (about 0.3 ms)."""
    key = (conn.dialect.name, columns)
    statement = _INSERTS.get(key)
    if statement is None:
        statement = _INSERTS[key] = (
            insert_ignoring_conflicts(conn, MESSAGES)
            .values({name: bindparam(name) for name in columns}).returning(MESSAGES.c.seq))
    return statement


class Jobs(Protocol):
    """The extraction queue, as ingest sees it (the pipeline)."""

    def reserve(self) -> Lease | None: ...
    def unreserve(self) -> None: ...
    def claimed(self, message_id: str) -> None: ...
    def submit(self, message_id: str) -> None: ...
    async def caught_up(self) -> None: ...


class Extract(Protocol):
    """Extraction in a worker process (the pipeline's), as ingest needs it for mail it must
    encrypt before it is stored."""

    async def __call__(self, source: bytes | Path) -> Extracted: ...


class Ingest:
    """Stores accepted messages durably and hands their ids to the pipeline."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], writer: GroupCommit,
                 store: ObjectStore, spooler: Spooler, hostname: str, dedupe_window: float,
                 jobs: Jobs, events: Wakeups, pgp: OpenPgp | None = None,
                 extract: Extract | None = None) -> None:
        self._pgp = pgp
        self._extract = extract
        self._events = events
        self._spooler = spooler
        self._sessions = sessions
        self._writer = writer
        self._store = store
        self._hostname = hostname
        self._window = dedupe_window
        self._jobs = jobs
        self._inflight: set[asyncio.Task[Accepted]] = set()

    def begin(self, delivery: Delivery) -> Incoming:
        """Start receiving one message for `delivery`; its bytes go to the returned spool."""
        message_id = new_message_id()
        header = received_header(delivery, self._hostname, message_id, time.time())
        return Incoming(message_id, self._spooler.open(header))

    async def accept(self, delivery: Delivery, incoming: Incoming) -> Accepted:
        """Make the spooled message durable; raises TransientError when we cannot.

        The work runs in a task of its own, shielded from the caller: a client that hangs up, an
        idle timer or a drain deadline may cancel the SMTP side, but never a half-done durable
        write (which would leave a committed row without its raw object, or the reverse).
        """
        task = asyncio.create_task(self._accept(delivery, incoming))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def admit(self) -> None:
        """Wait (boundedly) until extraction has caught up enough to take one more message."""
        await self._jobs.caught_up()

    async def wait_idle(self, within: float) -> None:
        """Wait for accepts still running (their clients may be gone) before shutting down."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=within)

    async def _existing(self, key: str) -> str | None:
        """The id of a message already accepted with this dedupe key inside the window."""
        async with self._sessions() as session, translated_errors():
            row = (await session.exec(select(Message.id, Message.received_at)
                                      .where(Message.dedupe_key == key))).first()
            if row is None:
                return None
            msg_id, received_at = row
            if utcnow() - received_at <= timedelta(seconds=self._window) and \
                    await self._store.exists(raw_key(msg_id)):
                return msg_id
            # Outside the window (or its raw object is gone): the old message gives up its key.
            await session.exec(update(Message).where(Message.id == msg_id)  # type: ignore[arg-type]
                               .values(dedupe_key=None))
            await session.commit()
            return None

    async def _row_exists(self, message_id: str) -> bool:
        async with self._sessions() as session, translated_errors():
            found = await session.exec(select(Message.seq).where(Message.id == message_id))
            return found.first() is not None

    async def _accept(self, delivery: Delivery, incoming: Incoming) -> Accepted:
        spooled = incoming.spool.finish()
        keys = sorted({r.pgp_fingerprint for r in delivery.recipients if r.pgp_fingerprint})
        if keys and self._pgp is not None and self._pgp.mode != "off":
            return await self._accept_encrypted(delivery, incoming.message_id, spooled, keys)
        message_id = incoming.message_id
        rkey = raw_key(message_id)
        try:
            # Fails clean: a temp file renamed into place, or the spool file moved.
            if spooled.data is not None:
                await self._store.put(rkey, spooled.data, "message/rfc822")
            else:
                assert spooled.path is not None
                await self._store.put_files([(rkey, spooled.path)])
        finally:
            if spooled.path is not None:
                spooled.path.unlink(missing_ok=True)
        key = dedupe_key(spooled.body_sha256, delivery.recipients)
        mail_from = "" if delivery.mail_from == "<>" else delivery.mail_from
        row = {
            "id": message_id, "dedupe_key": key, "status": RECEIVED, "mail_from": mail_from,
            "peer": delivery.peer[:100], "size": spooled.size, "raw_key": rkey,
            "raw_sha256": spooled.sha256, "received_at": utcnow(),
            "attempts": 0, "attachment_count": 0, "defects": "[]",
        }
        recipients = list({r.address: r for r in delivery.recipients}.values())
        # With room in this node's queue the row is written already leased to us: the worker
        # then needs no claim of its own (one commit less per message).
        lease = self._jobs.reserve()
        if lease is not None:
            row.update(status=PROCESSING, lease_owner=lease.owner,
                       lease_expires_at=lease.expires_at, attempts=1)
        try:
            accepted = await self._insert(message_id, rkey, key, row, recipients)
        except BaseException:
            if lease is not None:
                self._jobs.unreserve()  # if the row did commit, the lease expires and a sweep
            raise                       # finds the message
        if lease is None:
            if not accepted.duplicate:
                self._jobs.submit(message_id)
        elif accepted.duplicate:
            self._jobs.unreserve()
        else:
            self._jobs.claimed(message_id)
        return accepted

    async def _accept_encrypted(self, delivery: Delivery, message_id: str, spooled: Spooled,
                                fingerprints: list[str]) -> Accepted:
        """Mail for agents with keys (SPEC §8): taken apart now, while its plaintext is here,
        then every object encrypted to all the recipients' keys at once and stored, and the
        message recorded complete; only then 250. Nothing readable leaves the process, and
        nothing is left to do after 250 that would need the plaintext again."""
        assert self._pgp is not None and self._extract is not None
        pgp, spool_dir = self._pgp, self._store.spool_dir
        rkey = raw_key(message_id)
        plain = spooled.path
        if plain is None:  # the extraction worker and gpg read files
            plain = spool_name(spool_dir, "plain")
            assert spooled.data is not None
            await asyncio.to_thread(plain.write_bytes, spooled.data)
        uploads: list[tuple[str, Path]] = []
        stored: dict[str, Stored] = {}
        try:
            result = await self._extract(plain)
            try:
                found = result.found
                signature = await pgp.signature(found)
                by_index = {str(p.index): p for p in found.attachments}
                enc = spool_name(spool_dir, "enc")
                await pgp.encrypt_file(plain, enc, fingerprints)
                uploads.append((rkey, enc))
                for slot, name in result.files.items():
                    part = by_index.get(slot)
                    plain_key = body_key(message_id, slot) if part is None \
                        else attachment_key(message_id, part.index)
                    if part is not None and part.encrypted:  # ciphertext already: as it came
                        uploads.append((plain_key, Path(name)))
                        continue
                    enc = spool_name(spool_dir, "enc")
                    sha256, size = await pgp.encrypt_file(Path(name), enc, fingerprints)
                    stored[slot] = Stored(plain_key + ".asc", sha256, size)
                    uploads.append((plain_key + ".asc", enc))
                await self._store.put_files(uploads)
            finally:
                remove_files(result.files)
                for _, leftover in uploads:
                    leftover.unlink(missing_ok=True)
        finally:
            plain.unlink(missing_ok=True)
        now = utcnow()
        outcome = Outcome(stored=stored, encrypted_to=tuple(fingerprints), signature=signature)
        key = dedupe_key(spooled.body_sha256, delivery.recipients)
        row = {
            "id": message_id, "dedupe_key": key,
            "mail_from": "" if delivery.mail_from == "<>" else delivery.mail_from,
            "peer": delivery.peer[:100], "size": spooled.size, "raw_key": rkey,
            "raw_sha256": spooled.sha256, "received_at": now, "attempts": 1,
            **message_values(message_id, found, True, now, outcome),
        }
        rows = attachment_rows(message_id, found, True, now, {}, outcome)
        recipients = list({r.address: r for r in delivery.recipients}.values())
        agents = sorted({r.agent_id for r in recipients})
        events = result_events(agents, message_id, found, rows, str(row["status"]), now)
        try:
            accepted = await self._insert(message_id, rkey, key, row, recipients,
                                          attachments=rows, later_events=events)
        except BaseException:
            await self._discard([k for k, _ in uploads if k != rkey])
            raise
        if accepted.duplicate:
            await self._discard([k for k, _ in uploads if k != rkey])
        else:
            log.info("message.state", message_id=message_id, status=row["status"],
                     attachments=len(rows), encrypted_to=len(fingerprints))
        return accepted

    async def _discard(self, keys: list[str]) -> None:
        """Remove objects written for a message that was not recorded (best effort: what
        remains is an orphan for `postroom gc`)."""
        for k in keys:
            try:
                await self._store.delete(k)
            except Exception:
                log.warning("ingest.orphan_object", key=k)

    async def _insert(self, message_id: str, rkey: str, key: str, row: dict[str, Any],
                      recipients: list[Resolved], attachments: list[dict[str, Any]] | None = None,
                      later_events: list[dict[str, Any]] | None = None) -> Accepted:
        def insert(conn: Connection) -> bool:
            commit_in_order(conn)  # the message's seq is a cursor too
            seq = conn.execute(_message_insert(conn, tuple(row)), row).scalar()
            if seq is None:
                return False  # another connection committed the same delivery first
            conn.execute(_RECIPIENT_INSERT, [
                {"message_seq": seq, "message_id": message_id, "agent_id": r.agent_id,
                 "address": r.address, "tag": r.tag} for r in recipients])
            if attachments:
                conn.execute(_ATTACHMENT_INSERT, attachments)
            record_events(conn, event_rows((r.agent_id for r in recipients),
                                           "message.received", message_id, row["received_at"],
                                           status=str(row["status"])))
            if later_events:
                record_events(conn, later_events)
            return True

        # No read first: the unique dedupe key makes the insert itself the redelivery check, so
        # the common case costs one write; a redelivery costs a raw put and its removal.
        for _ in range(2):
            try:
                inserted = await self._writer.write(insert)
            except Exception:
                # Remove the object only when we know no row points at it: a commit whose
                # outcome is unknown (a connection lost during COMMIT) may have succeeded.
                try:
                    if not await self._row_exists(message_id):
                        await self._store.delete(rkey)
                except Exception:
                    log.warning("ingest.orphan_raw", message_id=message_id)
                raise
            if inserted:
                self._events.wake()
                return Accepted(message_id, duplicate=False)
            # A message with these bytes and recipients exists: a relay's retry, or the same
            # bytes racing on another connection. Outside the window it gives its key up, and
            # the insert is tried once more.
            existing = await self._existing(key)
            if existing is not None:
                await self._store.delete(rkey)
                return Accepted(existing, duplicate=True)
        await self._store.delete(rkey)
        raise TransientError("a concurrent delivery of the same message did not finish")
