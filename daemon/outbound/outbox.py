"""The outbox (SPEC §12): a send request checked, composed once, signed, made durable, then 202.

The 250 rule, for sending: the composed message is in the object store and its rows (message,
the sender's mailbox row, one delivery per recipient, the idempotency answer) are committed in
one transaction before `send` returns. Delivery happens later, in `daemon.outbound.delivery`.
Refusals are `SendRefused` with the API's status and code; nothing is stored for them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.clock import SYSTEM, Clock
from daemon.content import (
    INDEX_CHARS,
    SUBJECT_THREAD_DAYS,
    MessageText,
    is_reply_subject,
    message_text,
    subject_key,
)
from daemon.directory import Directory
from daemon.events import Wakeups, event_rows, record_events
from daemon.ids import new_message_id, thread_id_for, thread_id_of
from daemon.outbound.compose import CompositionError, Draft, Mailbox, check_address, compose
from daemon.outbound.dkim import DkimKey, sign
from daemon.outbound.refs import (
    AttachmentRef,
    NotReady,
    NotVisible,
    load_files,
    resolve_ref,
    visible_message,
)
from daemon.outbound.verp import envelope_sender
from storage.db import Conflict, translated_errors
from storage.models import (
    BOUNCED,
    OUTBOUND,
    QUEUED,
    Address,
    Delivery,
    IdempotencyKey,
    Message,
    Recipient,
)
from storage.objects import ObjectStore, body_key, raw_key
from storage.search import index_message, thread_of_subject

log = structlog.get_logger("postroom.outbound")

MESSAGES: Any = Message.__table__  # type: ignore[attr-defined]
RECIPIENTS: Any = Recipient.__table__  # type: ignore[attr-defined]
DELIVERIES: Any = Delivery.__table__  # type: ignore[attr-defined]
ADDRESSES: Any = Address.__table__  # type: ignore[attr-defined]
KEYS: Any = IdempotencyKey.__table__  # type: ignore[attr-defined]
IDEMPOTENCY_WINDOW = timedelta(hours=24)


class SendRefused(Exception):
    """The send is refused as a whole; the API answers `status` with `code` and the text."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None
                 ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


@dataclass(frozen=True)
class SendRequest:
    agent_id: str
    to: tuple[Mailbox, ...]
    subject: str = ""
    sender: Mailbox | None = None  # default: the agent's first address
    cc: tuple[Mailbox, ...] = ()
    bcc: tuple[Mailbox, ...] = ()
    text: str | None = None
    html: str | None = None
    in_reply_to: str | None = None  # one of our message ids (msg_…)
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[AttachmentRef, ...] = field(default_factory=tuple)
    idempotency_key: str | None = None

    def digest(self) -> str:
        """What makes two requests the same one, for `Idempotency-Key`."""
        body = {k: v for k, v in asdict(self).items() if k != "idempotency_key"}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class OutboxSettings:
    max_message_size: int
    max_recipients: int
    rate_per_agent: int  # messages a minute
    relay_configured: bool
    bounce_address: str | None = None
    dkim: tuple[DkimKey, ...] = ()


class Outbox:
    """Turns send requests into durable outbound messages."""

    def __init__(self, settings: OutboxSettings, sessions: async_sessionmaker[AsyncSession],
                 store: ObjectStore, directory: Directory, events: Wakeups,
                 wake_delivery: Callable[[], None] = lambda: None, clock: Clock = SYSTEM) -> None:
        self.settings = settings
        self._sessions = sessions
        self._store = store
        self._directory = directory
        self._events = events
        self._wake_delivery = wake_delivery
        self._clock = clock

    async def send(self, req: SendRequest) -> dict[str, Any]:
        """Queue one message; returns the 202 body. Raises `SendRefused`."""
        now = self._clock.now()
        async with self._sessions() as session, translated_errors():
            conn = await session.connection()
            if req.idempotency_key is not None:
                earlier = await _earlier_answer(conn, req, now)
                if earlier is not None:
                    return earlier
            await self._check_rate(conn, req.agent_id, now)
            sender = await self._sender(conn, req)
            recipients = self._recipients(req)
            threading = await self._threading(conn, req)
            refs = []
            for ref in req.attachments:
                try:
                    refs.append(await resolve_ref(conn, req.agent_id, ref))
                except NotVisible as e:
                    raise SendRefused(404, "not_found", f"no attachment {e.ref}") from None
                except NotReady as e:
                    raise SendRefused(409, "not_ready", f"attachment {e.ref} is {e.status}, "
                                      "not ready") from None
        if sum(max(r.size, 0) for r in refs) > self.settings.max_message_size:
            raise SendRefused(413, "too_large", "the attachments are over smtp.max_message_size")
        try:
            files = await load_files(self._store, refs, [r.label for r in req.attachments])
        except NotReady as e:
            raise SendRefused(409, "not_ready", f"attachment {e.ref} is not uploaded yet"
                              ) from None
        message_id = new_message_id()
        header_id = f"<{message_id}@{sender.email.rpartition('@')[2]}>"
        draft = Draft(sender=sender, to=req.to, cc=req.cc, subject=req.subject, text=req.text,
                      html=req.html, in_reply_to=threading[0], references=threading[1],
                      headers=req.headers, attachments=tuple(files))
        try:
            raw = compose(draft, message_id=header_id, date=now)
        except CompositionError as e:
            raise SendRefused(422, "invalid_message", str(e)) from None
        raw = sign(raw, sender.email.rpartition("@")[2], self.settings.dkim)
        if len(raw) > self.settings.max_message_size:
            raise SendRefused(413, "too_large", "the message is over smtp.max_message_size")
        # The thread of the message answered, as it has it (it may have joined one by
        # subject); else the one the headers name.
        thread_id = threading[2] or thread_id_of(" ".join(threading[1]), threading[0],
                                                 header_id)
        await self._store.put(raw_key(message_id), raw)
        readable = await asyncio.to_thread(message_text, draft.text, draft.html)
        bodies = {kind: value.encode("utf-8") for kind, value in (
            ("text", readable.text), ("html", draft.html),
            ("extracted", readable.extracted if readable.extracted != readable.text else None))
            if value is not None}
        for kind, data in bodies.items():  # so the message reads as inbound mail does
            await self._store.put(body_key(message_id, kind), data)
        try:
            answer = await self._commit(req, message_id, header_id, thread_id, sender,
                                        recipients, raw, draft, now,
                                        {k: len(v) for k, v in bodies.items()}, readable)
        except Conflict:
            # The same Idempotency-Key, committed by a concurrent request first: its answer.
            # (The objects written for this one are orphans, which `postroom gc` removes.)
            async with self._sessions() as session, translated_errors():
                earlier = await _earlier_answer(await session.connection(), req, now)
            if earlier is None:
                raise
            return earlier
        self._events.wake()
        self._wake_delivery()
        log.info("outbound.queued", message_id=message_id, agent_id=req.agent_id,
                 recipients=len(recipients), size=len(raw), attachments=len(files))
        return answer

    async def _check_rate(self, conn: AsyncConnection, agent_id: str, now: datetime) -> None:
        sent = (await conn.execute(
            select(func.count()).select_from(MESSAGES)
            .join(RECIPIENTS, RECIPIENTS.c.message_id == MESSAGES.c.id)
            .where(RECIPIENTS.c.agent_id == agent_id, MESSAGES.c.direction == OUTBOUND,
                   MESSAGES.c.received_at > now - timedelta(minutes=1)))).scalar_one()
        if sent >= self.settings.rate_per_agent:
            raise SendRefused(429, "rate_limited", f"over outbound.rate_per_agent "
                              f"({self.settings.rate_per_agent} a minute)", retry_after=60)

    async def _sender(self, conn: AsyncConnection, req: SendRequest) -> Mailbox:
        owned = [str(r[0]) for r in (await conn.execute(
            select(ADDRESSES.c.address).where(ADDRESSES.c.agent_id == req.agent_id)
            .order_by(ADDRESSES.c.address))).all()]
        if req.sender is None:
            plain = [a for a in owned if not a.startswith("*@")]
            if not plain:
                raise SendRefused(422, "invalid_request", "the agent has no address to send "
                                  "from: give `from`")
            return Mailbox(plain[0])
        try:
            check_address(req.sender.email, "from")
        except CompositionError as e:
            raise SendRefused(422, "invalid_request", str(e)) from None
        address = req.sender.email.lower()
        local, _, domain = address.rpartition("@")
        if address in owned or f"*@{domain}" in owned or f"{local.partition('+')[0]}@{domain}" \
                in owned:
            return req.sender
        raise SendRefused(403, "forbidden_sender", "`from` is not one of the agent's addresses")

    def _recipients(self, req: SendRequest) -> list[tuple[str, str]]:
        """(address, kind) of every envelope recipient, once each, first kind wins."""
        seen: dict[str, str] = {}
        for kind, boxes in (("to", req.to), ("cc", req.cc), ("bcc", req.bcc)):
            for box in boxes:
                try:
                    check_address(box.email, kind)
                except CompositionError as e:
                    raise SendRefused(422, "invalid_request", str(e)) from None
                seen.setdefault(box.email.lower(), kind)
        if not seen:
            raise SendRefused(422, "invalid_request", "no recipient: give `to`")
        if len(seen) > self.settings.max_recipients:
            raise SendRefused(422, "too_many_recipients",
                              f"over outbound.max_recipients ({self.settings.max_recipients})")
        return list(seen.items())

    async def _threading(self, conn: AsyncConnection, req: SendRequest
                         ) -> tuple[str | None, tuple[str, ...], str | None]:
        """(In-Reply-To, References before it, thread) from the message answered."""
        if req.in_reply_to is None:
            return None, (), None
        try:
            original = await visible_message(conn, req.agent_id, req.in_reply_to)
        except NotVisible:
            raise SendRefused(404, "not_found", f"no message {req.in_reply_to}") from None
        header = (original.message_id_header or "").strip()
        if not header:
            return None, (), original.thread_id
        refs = tuple((original.references_header or "").split())
        return header, refs, original.thread_id

    async def _commit(self, req: SendRequest, message_id: str, header_id: str, thread_id: str,
                      sender: Mailbox, recipients: list[tuple[str, str]], raw: bytes,
                      draft: Draft, now: datetime, bodies: dict[str, int],
                      readable: MessageText) -> dict[str, Any]:
        local = {address: await self._directory.lookup(address) is not None
                 for address, _ in recipients}
        relay = self.settings.relay_configured
        rows = [{"message_id": message_id, "address": address, "kind": kind,
                 "local": local[address], "attempts": 0, "next_attempt_at": now,
                 "status": QUEUED if local[address] or relay else BOUNCED,
                 "reason": None if local[address] or relay else "no_relay",
                 "updated_at": now} for address, kind in recipients]
        status = QUEUED if any(r["status"] == QUEUED for r in rows) else BOUNCED
        answer = {"id": message_id, "direction": OUTBOUND, "status": status,
                  "thread_id": thread_id, "message_id_header": header_id,
                  "recipients": [{"address": r["address"], "kind": r["kind"],
                                  "status": r["status"], "reason": r["reason"]} for r in rows]}
        key = subject_key(draft.subject)
        async with self._sessions() as session, translated_errors():
            conn = await session.connection()
            if req.in_reply_to is None and key is not None and \
                    is_reply_subject(draft.subject):  # SPEC §15: the subject, last
                earlier = await conn.run_sync(thread_of_subject, key, message_id,
                                              [req.agent_id],
                                              now - timedelta(days=SUBJECT_THREAD_DAYS))
                answer["thread_id"] = thread_id = earlier or thread_id
            text_kind = "text" if "text" in bodies else None
            seq = (await conn.execute(MESSAGES.insert().values(
                id=message_id, status=status, mail_from=envelope_sender(
                    message_id, sender.email, self.settings.bounce_address),
                peer="api", size=len(raw), raw_key=raw_key(message_id),
                raw_sha256=hashlib.sha256(raw).hexdigest(), received_at=now, processed_at=now,
                attempts=0, from_header=_shown(sender), to_header=", ".join(map(_shown, req.to)),
                cc_header=", ".join(map(_shown, req.cc)) or None, subject=draft.subject,
                date_header=format_datetime(now), message_id_header=header_id,
                in_reply_to=draft.in_reply_to,
                references_header=" ".join(draft.references + ((draft.in_reply_to,)
                                           if draft.in_reply_to else ())) or None,
                attachment_count=len(draft.attachments), defects="[]", direction=OUTBOUND,
                thread_id=thread_id, own_thread=thread_id_for(header_id), subject_key=key,
                preview=readable.preview,
                text_key=body_key(message_id, "text") if text_kind else None,
                text_size=bodies.get("text"),
                html_key=body_key(message_id, "html") if "html" in bodies else None,
                html_size=bodies.get("html"),
                extracted_key=body_key(message_id, "extracted" if "extracted" in bodies
                                       else "text") if text_kind else None,
                extracted_size=bodies.get("extracted", bodies.get("text")),
            ).returning(MESSAGES.c.seq))).scalar_one()
            addresses = " ".join(filter(None, (_shown(sender), *map(_shown, req.to),
                                               *map(_shown, req.cc))))
            await conn.run_sync(index_message, message_id, draft.subject, addresses,
                                (readable.text or "")[:INDEX_CHARS])
            await conn.execute(RECIPIENTS.insert().values(
                message_seq=seq, message_id=message_id, agent_id=req.agent_id,
                address=sender.email.lower(), tag=None))
            await conn.execute(DELIVERIES.insert(), rows)
            if req.idempotency_key is not None:
                await conn.execute(KEYS.insert().values(
                    agent_id=req.agent_id, key=req.idempotency_key,
                    request_sha256=req.digest(), message_id=message_id,
                    response=json.dumps(answer), created_at=now))
            bounced = [r for r in rows if r["status"] == BOUNCED]
            if bounced:
                await conn.run_sync(record_events, event_rows(
                    [req.agent_id], "message.bounced", message_id, now, status=BOUNCED))
            await session.commit()
        return answer


def _shown(box: Mailbox) -> str:
    return f'"{box.name}" <{box.email}>' if box.name else box.email


async def _earlier_answer(conn: AsyncConnection, req: SendRequest, now: datetime
                          ) -> dict[str, Any] | None:
    row = (await conn.execute(select(KEYS).where(
        KEYS.c.agent_id == req.agent_id, KEYS.c.key == req.idempotency_key))).first()
    if row is None:
        return None
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(
        tzinfo=now.tzinfo)
    if now - created > IDEMPOTENCY_WINDOW:
        await conn.execute(KEYS.delete().where(KEYS.c.id == row.id))
        await conn.commit()
        return None
    if row.request_sha256 != req.digest():
        raise SendRefused(422, "idempotency_key_reused",
                          "this Idempotency-Key was used for a different request")
    answer: dict[str, Any] = json.loads(row.response)
    return answer
