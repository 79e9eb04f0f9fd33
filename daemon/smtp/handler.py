"""What a transaction means to us: the sender checks (MAIL), the agents behind each recipient
(RCPT), and the message handed to `daemon.pipeline` after DATA, with the reply SPEC §4 gives.

These are aiosmtpd's public handler hooks plus `receive_message`, which our DATA calls. No socket
here: the connection's bytes and timers are session.py's. A failure of ours is never a 5xx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from daemon.directory import Directory
from daemon.pipeline import Delivery, Ingest
from daemon.smtp import policy, xforward
from daemon.smtp.counters import SmtpCounters
from daemon.smtp.data import DataOutcome
from daemon.smtp.envelope import PostroomEnvelope, PostroomSession
from storage.errors import TransientError
from storage.spool import Spool

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP

log = structlog.get_logger("postroom.smtp")

ONE_BOUNCE_RECIPIENT = "452 4.5.3 a bounce goes alone in its transaction; send the rest again"


class Front(Protocol):
    """The connection as the hooks see it (`daemon.smtp.session.PostroomSMTP`); a protocol, so
    this module needs no import of the one that imports it."""

    @property
    def offers_auth(self) -> bool: ...
    @property
    def offers_xforward(self) -> bool: ...


class Bounces(Protocol):
    """Bounces for our outbound mail (`daemon.outbound.BounceIntake`), as the front needs it."""

    async def message_for(self, address: str) -> str | None: ...
    async def record(self, message_id: str, raw: bytes) -> int: ...


def log_refusal(command: str, session: PostroomSession, reply: str) -> None:
    """One event per refused command: who and what code, never the addresses or content."""
    log.info("smtp.refused", command=command, peer=session.client_text, result=reply[:3])


class PostroomHandler:
    """aiosmtpd hooks: EHLO extensions, MAIL size, RCPT resolution; then the message itself."""

    def __init__(self, directory: Directory, ingest: Ingest, max_size: int, max_recipients: int,
                 protocol_name: str, counters: SmtpCounters, at_rest: str = "off",
                 bounces: Bounces | None = None) -> None:
        self.bounces = bounces
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

    async def handle_EHLO(self, server: Front, session: PostroomSession,
                          envelope: PostroomEnvelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if not server.offers_auth:  # aiosmtpd lists its mechanisms after STARTTLS regardless
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        last = responses.pop()  # "250 HELP"
        extra = [f"250-SIZE {self.max_size}", "250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        if server.offers_xforward:
            extra.append(f"250-{xforward.EHLO_KEYWORD}")
        return [responses[0], *extra, *responses[1:], last]

    async def handle_MAIL(self, server: SMTP, session: PostroomSession, envelope: PostroomEnvelope,
                          address: str, mail_options: list[str]) -> str:
        if self.counters.draining:
            # No new transactions once the drain started; close after the reply is written.
            if server.transport is not None:
                asyncio.get_running_loop().call_soon(server.transport.close)
            return policy.SHUTTING_DOWN
        refusal = (policy.sender_refusal(address)
                   or policy.declared_size_refusal(mail_options, self.max_size))
        if refusal:
            log_refusal("MAIL", session, refusal)
            return refusal
        # Backpressure: with extraction behind (`pipeline.max_lag`), the reply to MAIL waits a
        # little, so relays send at the pace the whole job keeps, not only the 250's.
        await self.ingest.admit()
        if self.counters.draining:
            return policy.SHUTTING_DOWN
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return policy.SENDER_OK

    async def handle_RCPT(self, server: SMTP, session: PostroomSession, envelope: PostroomEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        resolved = envelope.resolved
        malformed = policy.address_refusal(address)
        if malformed:
            log_refusal("RCPT", session, malformed)
            return malformed
        if envelope.bounce_for is not None:
            return ONE_BOUNCE_RECIPIENT
        try:
            # A VERP address of ours names an outbound message, even under a catch-all.
            bounce = None if self.bounces is None else await self.bounces.message_for(address)
            found = None if bounce is not None else await self.directory.lookup(address)
        except TransientError:
            log_refusal("RCPT", session, policy.TRY_LATER)
            return policy.TRY_LATER
        if bounce is not None:
            if envelope.resolved:
                return ONE_BOUNCE_RECIPIENT
            envelope.bounce_for = bounce
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            return policy.RECIPIENT_OK
        keyed = found is not None and found.pgp_fingerprint is not None
        refusal = policy.recipient_refusal(
            len(resolved), self.max_recipients, found is not None,
            keyless_refused=self.at_rest == "required" and not keyed,
            other_encryption=self.at_rest != "off" and bool(resolved)
            and (resolved[0].pgp_fingerprint is not None) != keyed)
        if refusal:
            log_refusal("RCPT", session, refusal)
            return refusal
        assert found is not None
        resolved.append(found)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return policy.RECIPIENT_OK

    async def _receive_bounce(self, envelope: PostroomEnvelope, incoming_spool: Spool,
                              read: Callable[[Spool], Awaitable[tuple[DataOutcome, int]]]
                              ) -> str:
        """A DSN for one of our messages: recorded before 250, never stored as mail."""
        assert self.bounces is not None and envelope.bounce_for is not None
        try:
            outcome, size = await read(incoming_spool)
        except BaseException:
            incoming_spool.discard()
            raise
        self.counters.bytes_received += size
        if outcome != "ok":
            incoming_spool.discard()
            return policy.MESSAGE_TOO_BIG if outcome == "too_big" else policy.TRY_LATER
        spooled = incoming_spool.finish()
        try:
            raw = spooled.data if spooled.data is not None else await asyncio.to_thread(
                Path(str(spooled.path)).read_bytes)
            await self.bounces.record(envelope.bounce_for, raw)
        except TransientError as e:
            log.warning("smtp.bounce_failed", error=str(e))
            return policy.TRY_LATER
        finally:
            if spooled.path is not None:
                spooled.path.unlink(missing_ok=True)
        return "250 2.0.0 Ok: bounce recorded"

    async def receive_message(self, session: PostroomSession, envelope: PostroomEnvelope,
                              protocol: str,
                              read: Callable[[Spool], Awaitable[tuple[DataOutcome, int]]]) -> str:
        """Read the message with `read` into a spool, make it durable, and return the reply:
        250 with its id once stored, 552 past the size limit, 451 for any failure of ours.

        `protocol` names it in the Received header (RFC 3848). When the client goes away while
        `read` runs, the spool is discarded and the error raised again; while storing, the store
        finishes by itself (a retry of the same bytes is recognised as a redelivery).
        """
        started = time.monotonic()
        peer = session.client_text
        # Whom SPF asks about: what a trusted relay forwarded, else the PROXY source or the peer.
        client_ip, client_helo = xforward.sender_identity(
            envelope.forwarded, session.client[0] if session.client is not None else None)
        forwarded_for = envelope.forwarded.addr if envelope.forwarded is not None else None
        delivery = Delivery(mail_from=envelope.mail_from or "",
                            recipients=tuple(envelope.resolved), peer=peer,
                            helo=session.host_name or "unknown", protocol=protocol,
                            client_ip=client_ip, client_helo=client_helo)

        def logged(result: str, size: int | None, message_id: str | None = None) -> None:
            log.info("smtp.transaction", message_id=message_id, peer=peer, size=size,
                     recipients=len(envelope.rcpt_tos), result=result,
                     forwarded_for=forwarded_for,
                     duration_ms=round((time.monotonic() - started) * 1000, 2))

        incoming = self.ingest.begin(delivery)
        if envelope.bounce_for is not None:
            reply = await self._receive_bounce(envelope, incoming.spool, read)
            logged(reply[:3], None)
            return reply
        try:
            outcome, size = await read(incoming.spool)
        except (asyncio.CancelledError, ConnectionError):
            incoming.spool.discard()
            logged("aborted", None)
            raise
        except BaseException:
            incoming.spool.discard()
            raise
        self.counters.bytes_received += size
        message_id = None
        if outcome == "too_big":
            reply = policy.MESSAGE_TOO_BIG
        elif outcome == "failed":
            reply = policy.TRY_LATER
        else:
            try:
                accepted = await self.ingest.accept(delivery, incoming)
                message_id = accepted.message_id
                reply = f"250 2.0.0 Ok: queued as {message_id}"
            except asyncio.CancelledError:
                logged("aborted", size)
                raise
            except TransientError as e:
                log.warning("smtp.store_failed", peer=peer, error=str(e))
                reply = policy.TRY_LATER
            except Exception:
                # aiosmtpd would turn this into a permanent 500; a failure of ours is always 4xx.
                log.exception("smtp.unexpected_error", peer=peer)
                reply = policy.TRY_LATER
        code = reply[:3]
        self.counters.transactions[code] = self.counters.transactions.get(code, 0) + 1
        logged(code, size, message_id)
        return reply
