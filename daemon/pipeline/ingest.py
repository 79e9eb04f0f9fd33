"""Accepting one message: its objects made durable, its row committed, then 250 (SPEC §4, §8).

One path for all mail; mail encrypted at rest differs only in what is stored (ciphertext) and
when it is extracted (before 250, its results in the row's transaction). Never say 250 before
objects and row are durable. A redelivery gets the first message's id and keeps nothing new."""

from __future__ import annotations

import asyncio
import hashlib
import json
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
from daemon.events import Wakeups
from daemon.extract_worker import Extracted
from daemon.ids import new_message_id
from daemon.openpgp import OpenPgp
from daemon.pipeline.jobs import Lease
from daemon.pipeline.pool import remove_files
from daemon.pipeline.results import Outcome, Results, Stored, object_key
from daemon.pipeline.verification import Sender, Verifications
from daemon.sender_auth import local_submission
from extractors import Extraction
from storage.db import commit_in_order, insert_ignoring_conflicts, translated_errors
from storage.errors import TransientError
from storage.group_commit import GroupCommit
from storage.models import PROCESSING, RECEIVED, Message, Recipient
from storage.objects import ObjectStore, raw_key
from storage.spool import Spool, Spooled, Spooler, spool_name

log = structlog.get_logger("postroom.ingest")

MESSAGES = Message.__table__  # type: ignore[attr-defined]
RECIPIENTS = Recipient.__table__  # type: ignore[attr-defined]


LOCAL = "LOCAL"  # the protocol of a local delivery: an agent of ours sent it (SPEC §12)


@dataclass(frozen=True)
class Delivery:
    """The envelope of one SMTP transaction, as accepted at RCPT."""

    mail_from: str
    recipients: tuple[Resolved, ...]
    peer: str
    helo: str
    protocol: str  # "ESMTP", "SMTP" or "LMTP" for the Received header
    # The client SPF asks about (SPEC §13): the peer's address, or the one a relay in
    # trusted_networks forwarded (XFORWARD ADDR, a PROXY header), and the HELO name it gave
    # (None: the session's; "": none was forwarded with the address).
    client_ip: str | None = None
    client_helo: str | None = None


def _peer_ip(peer: str) -> str:
    """The address of a `host:port` or `[v6]:port` peer ("" when there is none)."""
    return peer.rsplit(":", 1)[0].strip("[]") if peer else ""


def sender_of(delivery: Delivery) -> Sender:
    """The identities SPF checks: MAIL FROM, and the client (the peer, or what a trusted relay
    forwarded with XFORWARD or PROXY) with its HELO name."""
    return Sender("" if delivery.mail_from == "<>" else delivery.mail_from,
                  (delivery.client_ip or _peer_ip(delivery.peer))[:64] or None,
                  (delivery.helo if delivery.client_helo is None
                   else delivery.client_helo)[:255] or None)


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
    peer_ip = _peer_ip(delivery.peer) or "unknown"
    lines = [f"Received: from {_header_safe(delivery.helo)} ([{_header_safe(peer_ip, 64)}])",
             f"\tby {_header_safe(hostname)} (postroom) with {delivery.protocol} id {message_id}"]
    if len(delivery.recipients) == 1:
        lines.append(f"\tfor <{_header_safe(delivery.recipients[0].address, 320)}>")
    lines[-1] += "; " + format_datetime(datetime.fromtimestamp(when, UTC))
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


_INSERTS: dict[tuple[str, tuple[str, ...]], Any] = {}
_RECIPIENT_INSERT = RECIPIENTS.insert()


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


@dataclass(frozen=True)
class _Written:
    """What was stored for a message before its row: the object keys (the raw one first) and,
    for mail extracted before 250, what extraction found and what was done with it."""

    keys: list[str]
    found: Extraction | None = None
    outcome: Outcome | None = None


class Jobs(Protocol):
    """The extraction queue, as ingest sees it (the pipeline)."""

    def reserve(self) -> Lease | None: ...
    def unreserve(self) -> None: ...
    def claimed(self, message_id: str, sender: Sender | None = None) -> None: ...
    def submit(self, message_id: str) -> None: ...
    def search_queued(self) -> None: ...
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
                 extract: Extract | None = None,
                 verifications: Verifications | None = None) -> None:
        self._pgp = pgp
        self._verifications = verifications
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
            written = await self._store_encrypted(incoming.message_id, spooled, keys, delivery)
        else:
            written = await self._store_raw(incoming.message_id, spooled)
        return await self._record(delivery, incoming.message_id, spooled, written)

    async def _store_raw(self, message_id: str, spooled: Spooled) -> _Written:
        """Mail stored as it came: the raw object only; extraction follows after 250."""
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
        return _Written([rkey])

    async def _store_encrypted(self, message_id: str, spooled: Spooled,
                               fingerprints: list[str], delivery: Delivery) -> _Written:
        """Mail for agents with keys (SPEC §8): taken apart and its sender verified now, while
        its plaintext is here, then the raw message and every extracted file encrypted to all
        the recipients' keys at once and stored. Nothing readable leaves our processes, and
        nothing is left to do after 250 that would need the plaintext again. (Verification
        runs beside extraction and encryption, so it adds to the 250's wait only what it takes
        beyond them.)"""
        assert self._pgp is not None and self._extract is not None
        pgp, spool_dir = self._pgp, self._store.spool_dir
        plain = spooled.path
        if plain is None:  # the extraction worker and gpg read files
            plain = spool_name(spool_dir, "plain")
            assert spooled.data is not None
            await asyncio.to_thread(plain.write_bytes, spooled.data)
        uploads: list[tuple[str, Path]] = []
        stored: dict[str, Stored] = {}
        checks = self._verifications
        verifying = None if checks is None or checks.auth is None or delivery.protocol == LOCAL \
            else asyncio.ensure_future(checks.check(plain, sender_of(delivery)))
        authentication = None
        try:
            result = await self._extract(plain)
            try:
                found = result.found
                signature = await pgp.signature(found)
                encrypted = {str(p.index) for p in found.attachments if p.encrypted}
                enc = spool_name(spool_dir, "enc")
                await pgp.encrypt_file(plain, enc, fingerprints)
                uploads.append((raw_key(message_id), enc))
                for slot, name in result.files.items():
                    key = object_key(message_id, slot)
                    if slot in encrypted:  # ciphertext already: stored as it came
                        uploads.append((key, Path(name)))
                        continue
                    enc = spool_name(spool_dir, "enc")
                    sha256, size = await pgp.encrypt_file(Path(name), enc, fingerprints)
                    stored[slot] = Stored(key + ".asc", sha256, size)
                    uploads.append((key + ".asc", enc))
                await self._store.put_files(uploads)
                if verifying is not None:
                    authentication = await verifying
            finally:
                remove_files(result.files)
                for _, leftover in uploads:
                    leftover.unlink(missing_ok=True)
        finally:
            if verifying is not None and not verifying.done():
                verifying.cancel()
            plain.unlink(missing_ok=True)
        return _Written([key for key, _ in uploads], found, Outcome(
            stored=stored, encrypted_to=tuple(fingerprints), signature=signature,
            authentication=authentication, readable=result.readable, texts=result.texts))

    async def _record(self, delivery: Delivery, message_id: str, spooled: Spooled,
                      written: _Written) -> Accepted:
        """The message's row (and, when it was extracted already, its results) committed
        over the objects `written`; the pipeline told what is left for it to do."""
        key = dedupe_key(spooled.body_sha256, delivery.recipients)
        now = utcnow()
        row: dict[str, Any] = {
            "id": message_id, "dedupe_key": key,
            "mail_from": "" if delivery.mail_from == "<>" else delivery.mail_from,
            "peer": delivery.peer[:100], "size": spooled.size, "raw_key": raw_key(message_id),
            "raw_sha256": spooled.sha256, "received_at": now,
        }
        sender = sender_of(delivery)
        row.update(client_ip=sender.client_ip, helo=sender.helo)
        if delivery.protocol == LOCAL:  # from an agent of ours: authenticated by its key
            authentication = local_submission(self._hostname, row["mail_from"])
            row.update(authentication=json.dumps(authentication), verdict="pass")
        recipients = list({r.address: r for r in delivery.recipients}.values())
        results = lease = None
        if written.found is not None:  # recorded complete: the pipeline has nothing to do
            results = Results(message_id, written.found, final=True, now=now,
                              outcome=written.outcome)
            row.update(attempts=1, announced=True, **results.message)
        else:
            row.update(status=RECEIVED, attempts=0, attachment_count=0, defects="[]")
            # With room in this node's queue the row is written already leased to us: the
            # worker then needs no claim of its own (one commit less per message).
            lease = self._jobs.reserve()
            if lease is not None:
                row.update(status=PROCESSING, lease_owner=lease.owner,
                           lease_expires_at=lease.expires_at, attempts=1)
        try:
            accepted = await self._insert(message_id, key, row, recipients, written.keys,
                                          results)
        except BaseException:
            if lease is not None:
                self._jobs.unreserve()  # if the row did commit, the lease expires and a sweep
            raise                       # finds the message
        if lease is not None:
            if accepted.duplicate:
                self._jobs.unreserve()
            else:
                self._jobs.claimed(message_id, None if delivery.protocol == LOCAL else sender)
        elif results is None and not accepted.duplicate:
            self._jobs.submit(message_id)
        elif results is not None and not accepted.duplicate:
            self._jobs.search_queued()
        return accepted

    async def _remove(self, keys: list[str]) -> None:
        """Remove the objects of a message no row records: the others best effort (what
        remains is an orphan for `postroom gc`), then the raw one (first in `keys`), whose
        failure is the caller's."""
        raw, *others = keys
        for k in others:
            try:
                await self._store.delete(k)
            except Exception:
                log.warning("ingest.orphan_object", key=k)
        await self._store.delete(raw)

    async def _insert(self, message_id: str, key: str, row: dict[str, Any],
                      recipients: list[Resolved], written: list[str],
                      results: Results | None) -> Accepted:
        recorded: list[dict[str, Any]] = []

        def insert(conn: Connection) -> bool:
            commit_in_order(conn)  # the message's seq is a cursor too
            seq = conn.execute(_message_insert(conn, tuple(row)), row).scalar()
            if seq is None:
                return False  # another connection committed the same delivery first
            conn.execute(_RECIPIENT_INSERT, [
                {"message_seq": seq, "message_id": message_id, "agent_id": r.agent_id,
                 "address": r.address, "tag": r.tag} for r in recipients])
            agents = sorted({r.agent_id for r in recipients})
            if results is not None:  # recorded whole (encrypted at rest): announced at once
                recorded[:] = results.write(conn, agents, announce=True,
                                            verdict=row.get("verdict"))
            # Else the pipeline says message.received, once the sender is verified (SPEC §13).
            return True

        # No read first: the unique dedupe key makes the insert itself the redelivery check, so
        # the common case costs one write; a redelivery costs a raw put and its removal.
        for _ in range(2):
            try:
                inserted = await self._writer.write(insert)
            except Exception:
                # Remove the objects only when we know no row points at them: a commit whose
                # outcome is unknown (a connection lost during COMMIT) may have succeeded.
                try:
                    if not await self._row_exists(message_id):
                        await self._remove(written)
                except Exception:
                    log.warning("ingest.orphan_raw", message_id=message_id)
                raise
            if inserted:
                self._events.wake()
                if results is not None:
                    results.log(recorded)
                return Accepted(message_id, duplicate=False)
            # A message with these bytes and recipients exists: a relay's retry, or the same
            # bytes racing on another connection. Outside the window it gives its key up, and
            # the insert is tried once more.
            existing = await self._existing(key)
            if existing is not None:
                await self._remove(written)
                return Accepted(existing, duplicate=True)
        await self._remove(written)
        raise TransientError("a concurrent delivery of the same message did not finish")
