"""The SMTP front: aiosmtpd's protocol with our policy, a chunked DATA reader and the 250 rule.

aiosmtpd reads DATA one line at a time, refuses long lines and lets its idle timer cut off a
large transfer; `PostroomSMTP.smtp_DATA` replaces that with a bytes-level reader (end marker and
dot-unstuffing found with bytes operations, size limit enforced while reading, timer reset on
every chunk). Everything else (commands, EHLO, STARTTLS, AUTH) stays aiosmtpd's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from daemon import policy
from daemon.directory import Directory, Resolved
from daemon.framing import Unstuffer
from daemon.ingest import Delivery, Ingest
from storage.errors import TransientError
from storage.spool import Spool

log = structlog.get_logger("postroom.smtp")

_CHUNK = 1 << 17  # how much DATA we take from the reader at a time


@dataclass
class SmtpCounters:
    """Live numbers shared by every connection (for limits, drain and metrics)."""

    open_connections: int = 0
    transactions: dict[str, int] = field(default_factory=dict)
    bytes_received: int = 0
    draining: bool = False
    in_data: int = 0


def _peer_text(session: Session) -> str:
    peer = session.peer
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def _log_refusal(command: str, session: Session, reply: str) -> None:
    """One event per refused command: who and what code, never the addresses or content."""
    log.info("smtp.refused", command=command, peer=_peer_text(session), result=reply[:3])


class PostroomHandler:
    """aiosmtpd hooks: EHLO extensions, MAIL size, RCPT resolution."""

    def __init__(self, directory: Directory, ingest: Ingest, max_size: int, max_recipients: int,
                 protocol_name: str, counters: SmtpCounters, at_rest: str = "off") -> None:
        self.at_rest = at_rest
        self.counters = counters
        self.directory = directory
        self.ingest = ingest
        self.max_size = max_size
        self.max_recipients = max_recipients
        self.protocol_name = protocol_name

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's fallback would answer a permanent 500; an error of ours is always 451."""
        log.error("smtp.unexpected_error", exc_info=error)
        return policy.TRY_LATER

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        last = responses.pop()  # "250 HELP"
        extra = [f"250-SIZE {self.max_size}", "250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        return [responses[0], *extra, *responses[1:], last]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.counters.draining:
            # No new transactions once the drain started; close after the reply is written.
            if server.transport is not None:
                asyncio.get_running_loop().call_soon(server.transport.close)
            return policy.SHUTTING_DOWN
        refusal = policy.declared_size_refusal(mail_options, self.max_size)
        if refusal:
            _log_refusal("MAIL", session, refusal)
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.resolved = []  # type: ignore[attr-defined]
        return policy.SENDER_OK

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        resolved: list[Resolved] = envelope.resolved  # type: ignore[attr-defined]
        too_long = policy.address_refusal(address)
        if too_long:
            _log_refusal("RCPT", session, too_long)
            return too_long
        try:
            found = await self.directory.lookup(address)
        except TransientError:
            _log_refusal("RCPT", session, policy.TRY_LATER)
            return policy.TRY_LATER
        keyed = found is not None and found.pgp_fingerprint is not None
        refusal = policy.recipient_refusal(
            len(resolved), self.max_recipients, found is not None,
            keyless_refused=self.at_rest == "required" and not keyed,
            other_encryption=self.at_rest != "off" and bool(resolved)
            and (resolved[0].pgp_fingerprint is not None) != keyed)
        if refusal:
            _log_refusal("RCPT", session, refusal)
            return refusal
        assert found is not None
        resolved.append(found)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return policy.RECIPIENT_OK


class PostroomSMTP(SMTP):
    """One SMTP connection."""

    def __init__(self, handler: PostroomHandler, counters: SmtpCounters,
                 networks: tuple[policy.Network, ...], max_connections: int,
                 connections: set[PostroomSMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        # aiosmtpd keeps this dict on the class and grows it on every EHLO; make it ours.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self._handler = handler
        self._counters = counters
        self._networks = networks
        self._max_connections = max_connections
        self._refusal: str | None = None
        self._connections = connections
        self._in_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # a new connection, not the STARTTLS upgrade of one
            self._counters.open_connections += 1
            self._connections.add(self)
            peer = transport.get_extra_info("peername")
            self._refusal = policy.connection_refusal(
                peer[0] if peer else None, self._networks, self._counters.open_connections,
                self._max_connections, self._counters.draining)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._counters.open_connections -= 1
        self._connections.discard(self)
        super().connection_lost(error)

    def close_for_shutdown(self) -> None:
        """Tell the client we are going away (421) and close; used when draining."""
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self._writer.write((policy.SHUTTING_DOWN + "\r\n").encode())
            self.transport.close()

    async def _handle_client(self) -> None:
        if self._refusal is not None:
            await self.push(self._refusal)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    async def _read_data(self, limit: int, spool: Spool) -> tuple[str, int]:
        """Read DATA up to the end marker into `spool`: ("ok" | "too_big" | "failed", size).

        The message never sits whole in memory: each chunk is unstuffed and handed on, keeping
        back only a tail that may hold the start of the end marker or of a stuffed line.
        `size` counts unstuffed bytes; past `limit` (or after a spool error) the rest is read
        and dropped, so the connection stays in step with the client.
        """
        reader = self._reader
        # A larger reader limit lets the transport deliver big chunks instead of pausing every
        # two kilobytes; restored after DATA so command lines stay bounded.
        saved_limit = reader._limit  # type: ignore[attr-defined]
        reader._limit = max(saved_limit, _CHUNK)  # type: ignore[attr-defined]
        framing = Unstuffer()
        size = 0
        state = "ok"
        try:
            while True:
                chunk = await reader.read(_CHUNK)
                if not chunk:
                    raise ConnectionResetError("connection closed during DATA")
                self._reset_timeout()
                out = framing.feed(chunk)
                if framing.done and framing.leftover:
                    # Pipelined commands after the final dot belong to the command loop.
                    reader._buffer[0:0] = framing.leftover  # type: ignore[attr-defined]
                size += len(out)
                if state == "ok" and size > limit:
                    state = "too_big"
                    spool.discard()
                if state == "ok" and out:
                    try:
                        await spool.write(out)
                    except OSError as e:
                        log.warning("smtp.spool_failed", error=e.strerror or str(e))
                        state = "failed"
                        spool.discard()
                if framing.done:
                    return state, size
        finally:
            reader._limit = saved_limit  # type: ignore[attr-defined]

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # Counted until the reply is out, so a drain never cuts a transaction between its last
        # byte and its 250.
        self._counters.in_data += 1
        try:
            await self._finish_transaction()
        finally:
            self._counters.in_data -= 1

    async def _finish_transaction(self) -> None:
        """Read the message, make it durable, reply (one SMTP reply for the whole envelope)."""
        assert self.envelope is not None and self.session is not None
        started = time.monotonic()
        peer_text = _peer_text(self.session)
        delivery = Delivery(
            mail_from=self.envelope.mail_from or "",
            recipients=tuple(self.envelope.resolved),  # type: ignore[attr-defined]
            peer=peer_text, helo=self.session.host_name or "unknown",
            protocol=self._handler.protocol_name)
        incoming = self._handler.ingest.begin(delivery)
        try:
            state, size = await self._read_data(self._handler.max_size, incoming.spool)
        except (asyncio.CancelledError, ConnectionError):
            incoming.spool.discard()
            log.info("smtp.transaction", message_id=None, peer=peer_text, size=None,
                     recipients=len(self.envelope.rcpt_tos), result="aborted",
                     duration_ms=round((time.monotonic() - started) * 1000, 2))
            raise
        except BaseException:
            incoming.spool.discard()
            raise
        self._counters.bytes_received += size
        message_id = None
        if state == "too_big":
            reply = policy.MESSAGE_TOO_BIG
        elif state == "failed":
            reply = policy.TRY_LATER
        else:
            try:
                accepted = await self._handler.ingest.accept(delivery, incoming)
                message_id = accepted.message_id
                reply = f"250 2.0.0 Ok: queued as {message_id}"
            except asyncio.CancelledError:
                # The client went away while we were storing; the store finishes on its own and
                # a retry of the same bytes is recognised as a redelivery.
                log.info("smtp.transaction", message_id=None, peer=peer_text, size=size,
                         recipients=len(self.envelope.rcpt_tos), result="aborted",
                         duration_ms=round((time.monotonic() - started) * 1000, 2))
                raise
            except TransientError as e:
                log.warning("smtp.store_failed", peer=peer_text, error=str(e))
                reply = policy.TRY_LATER
            except Exception:
                # aiosmtpd would turn this into a permanent 500; a failure of ours is always 4xx.
                log.exception("smtp.unexpected_error", peer=peer_text)
                reply = policy.TRY_LATER
        code = reply[:3]
        self._counters.transactions[code] = self._counters.transactions.get(code, 0) + 1
        log.info("smtp.transaction", message_id=message_id, peer=peer_text, size=size,
                 recipients=len(self.envelope.rcpt_tos), result=code,
                 duration_ms=round((time.monotonic() - started) * 1000, 2))
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(reply)
