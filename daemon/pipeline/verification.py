"""Sender verification beside extraction (SPEC §13), off the path that paces SMTP.

A message's job starts its verification (`begin`) as extraction starts. When the job has
stored everything and only the verdict is missing, it gives its pipeline worker back
(`settle` sets `freed`): the next message starts, backpressure counts this one as done, and the
job itself goes on in the background, holding its lease, until the verdict comes; then it
records the message as it always does, `ready` with its `authentication` and message.received
in one transaction. So a message is never `ready` without its verdict, a verdict that is late
never slows the 250s, and a verification lost with its node is redone by whichever node takes
the lease next. The verifier process runs at a lower CPU priority: on a busy machine,
accepting and extracting mail go first. `backlog` bounds the jobs waiting so: past it, a job
keeps its worker until its verdict comes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, false, select, update

from daemon.openpgp import GpgUnavailable, OpenPgp
from daemon.pipeline.results import Outcome
from daemon.sender_auth import SenderAuth
from extractors import Extraction
from storage.group_commit import GroupCommit
from storage.models import Message

MESSAGES = Message.__table__  # type: ignore[attr-defined]
_IDENTITY = (select(MESSAGES.c.mail_from, MESSAGES.c.client_ip, MESSAGES.c.helo,
                    MESSAGES.c.verdict).where(MESSAGES.c.id == bindparam("message_id")))

_VERDICT = select(MESSAGES.c.verdict).where(MESSAGES.c.id == bindparam("message_id"))
_ANNOUNCE = (update(MESSAGES).where(MESSAGES.c.id == bindparam("a_id"),
                                    MESSAGES.c.announced == false()).values(announced=True))


def announcing(conn: Connection, message_id: str) -> bool:
    """True once per message, in the transaction that records its message.received (with
    the verdict: after verification)."""
    return bool(conn.execute(_ANNOUNCE, {"a_id": message_id}).rowcount)


def verdict_of(conn: Connection, message_id: str) -> str | None:
    """The verdict on the row (of the message's arrival, for a retry or a reprocess)."""
    verdict: str | None = conn.execute(_VERDICT, {"message_id": message_id}).scalar()
    return verdict


Verifying = asyncio.Task[dict[str, Any]]


class Sender(NamedTuple):
    """Who sent a message, as SPF checks it: ingest hands it over with a new message, so its
    first attempt need not read it back."""

    mail_from: str
    client_ip: str | None
    helo: str | None


class Verifications:
    """One node's verifications; `auth` None: verification is off."""

    def __init__(self, auth: SenderAuth | None, writer: GroupCommit,
                 backlog: int = 10_000) -> None:
        self.auth = auth
        self._writer = writer
        self.backlog = backlog
        self.waiting = 0  # jobs that gave their worker back and wait for their verdict

    async def begin(self, source: Path, message_id: str,
                    sender: Sender | None = None) -> Verifying | None:
        """Start verifying the message in `source` (sent by `sender`, a new message without
        a verdict; else read from its row); None when verification is off or the message has
        its verdict (a retry, a reprocess: the verdict is the one of its arrival)."""
        if self.auth is None:
            return None
        if sender is None:
            # Through the writer's batch, not a session of its own: on SQLite a session is a
            # connection with a thread of its own, which halved the messages accepted per
            # second.
            who = await self._writer.write(
                lambda conn: conn.execute(_IDENTITY, {"message_id": message_id}).first())
            if who is None or who.verdict is not None:
                return None
            sender = Sender(who.mail_from, who.client_ip, who.helo)
        return asyncio.create_task(self.check(source, sender))

    async def check(self, source: Path | bytes, sender: Sender) -> dict[str, Any]:
        """The message's authentication, now (ingest's, for mail encrypted at rest)."""
        assert self.auth is not None
        auth = await self.auth.check(source, client_ip=sender.client_ip, helo=sender.helo,
                                     mail_from=sender.mail_from)
        return auth.to_json()

    async def settle(self, task: Verifying, freed: asyncio.Event | None) -> dict[str, Any]:
        """The authentication, once `task` ends; if it has not ended yet, `freed` is set
        first (the job gives its worker back) unless the backlog is full. A verifier that
        died raises TransientError (the job is retried)."""
        if task.done() or freed is None or self.waiting >= self.backlog:
            return await task
        freed.set()
        self.waiting += 1
        try:
            return await task
        finally:
            self.waiting -= 1


async def check_signature(pgp: OpenPgp | None, found: Extraction, attempt: int,
                          max_attempts: int) -> tuple[Extraction, Outcome]:
    """The signature check (SPEC §8); a gpg that stays unavailable costs retries, then
    the message is recorded without the check (a defect says so) rather than failed."""
    if pgp is None:
        return found, Outcome()
    try:
        return found, Outcome(signature=await pgp.signature(found))
    except GpgUnavailable as e:
        if attempt < max_attempts:
            raise
        return (dataclasses.replace(found, defects=(
            *found.defects, f"signature: not checked: {str(e)[:200]}")), Outcome())
