"""One SMTP or LMTP connection: aiosmtpd's command loop with our greeting, timers and DATA.

Commands, EHLO and STARTTLS stay aiosmtpd's (1.4.6, pinned below 1.5 in pyproject.toml). Ours:
the PROXY header and the refusal before the greeting, who must use TLS or AUTH before MAIL
(auth.py), the 421 when a timer runs out, DATA (data.py reads it, handler.py stores it), and
XFORWARD for trusted relays (xforward.py; a `smtp_` method, as aiosmtpd adds commands).
aiosmtpd has no public hook for the first three, so these internals are still relied on:

- `_handle_client`, the connection's task, wrapped: ours runs before aiosmtpd's greeting.
- `_timeout_cb`, overridden: aiosmtpd calls it when its timer (reset on every command) fires.
- `_reset_timeout(seconds)`, called while DATA streams so the timer follows its time budget.
- `_reader`, the connection's asyncio StreamReader: DATA and the PROXY header are read from it.
- `_getaddr`, overridden for its fast path (policy.simple_path), else aiosmtpd's parser.
- `_create_session` / `_create_envelope`, the documented factories (envelope.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any, cast

import structlog
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, TLSSetupException, syntax

from daemon.passwords import AuthUsers
from daemon.smtp import policy, streams, xforward
from daemon.smtp.auth import SmtpAuth
from daemon.smtp.counters import SmtpCounters
from daemon.smtp.data import DataOutcome, TimeBudget, read_message
from daemon.smtp.envelope import socket_address
from daemon.smtp.handler import PostroomHandler, log_refusal
from daemon.smtp.proxy import MAX_HEADER, ProxyError, parse_proxy_header
from daemon.smtp.tls import TlsFiles
from storage.spool import Spool

log = structlog.get_logger("postroom.smtp")


class PostroomSMTP(SmtpAuth):
    """One SMTP connection.

    Who may deliver: a client in `smtp.trusted_networks` needs nothing more (AUTH is allowed,
    not needed). Without `smtp.auth_users` any other client gets 554 at connect; with it, any
    client is greeted, and one outside the trusted networks must STARTTLS and AUTH before MAIL
    (530 5.7.0 Authentication required). `smtp.require_tls` makes every client STARTTLS before
    MAIL (530 5.7.0 Must issue a STARTTLS command first).

    With `proxy_timeout` set (`smtp.proxy_protocol`), nothing is said until a PROXY v1/v2
    header has arrived, within that time and at most 536 bytes, from a connection whose own
    address is in `smtp.trusted_networks` (the proxy); anything else is closed without a
    greeting. From then on the client the header names is the peer for everything: the trust
    check above, the logs, the Received header and the message's peer. A LOCAL (v2) or UNKNOWN
    (v1) header leaves the proxy's own address as the peer.
    """

    def __init__(self, handler: PostroomHandler, counters: SmtpCounters,
                 networks: tuple[policy.Network, ...], max_connections: int,
                 connections: set[PostroomSMTP], *, tls: TlsFiles | None = None,
                 users: AuthUsers | None = None, require_tls: bool = False,
                 proxy_timeout: float | None = None, timeout: float = 300,
                 **kwargs: Any) -> None:
        # The context is taken now, so a reload() applies from the next connection on.
        super().__init__(handler, users=users, tls_context=tls.context if tls is not None else None,
                         timeout=timeout, **kwargs)
        # Not aiosmtpd's proxy_protocol_timeout: its reader has no size bound for v2 headers
        # and lets a short read escape as an exception; ours is proxy.py.
        self._proxy_header_timeout = proxy_timeout
        # aiosmtpd keeps this dict on the class and grows it on every EHLO; make it ours.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self._handler = handler
        self._counters = counters
        self._networks = networks
        self._max_connections = max_connections
        self._connections = connections
        self._require_tls = require_tls
        self._timeout = timeout  # `smtp.timeout`: idle between commands, DATA's budget
        self._arrival = 0  # open connections, this one included, when it arrived
        self._client_peer: tuple[str, int] | None = None  # from the PROXY header
        self._trusted = False
        self._greeted = False
        self._timeout_reply = policy.IDLE_TIMEOUT  # what the client hears when its timer fires

    @property
    def offers_xforward(self) -> bool:
        """XFORWARD is for a client in `smtp.trusted_networks` only (SPEC §4): it rewrites whom
        sender authentication asks about. AUTH does not stand in for it, as in Postfix, whose
        smtpd_authorized_xforward_hosts is a list of addresses."""
        return self._trusted

    @property
    def tls_active(self) -> bool:
        """True once STARTTLS has completed (aiosmtpd then gives the session its TLS info)."""
        return self.session is not None and self.session.ssl is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgrade = self.transport is not None  # the STARTTLS upgrade of a connection we have
        if not upgrade:
            self._counters.open_connections += 1
            self._counters.connections_total += 1
            self._arrival = self._counters.open_connections
            self._connections.add(self)
        super().connection_made(transport)
        # aiosmtpd starts a new session for the upgrade too: the proxied client stays the client.
        assert self.session is not None
        self.session.client = self._client_peer or socket_address(self.session.peer)

    def connection_lost(self, error: Exception | None) -> None:
        if self in self._connections:  # aiosmtpd calls this itself after a failed handshake
            self._connections.discard(self)
            self._counters.open_connections -= 1
        super().connection_lost(error)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # A client that cannot finish the handshake is common and its own problem: no
            # traceback. aiosmtpd closes the connection without sending this reply.
            assert self.session is not None
            log.info("smtp.tls_failed", peer=self.session.client_text,
                     reason=str(error.__cause__ or error)[:200])
            return policy.TRY_LATER
        return await self._handler.handle_exception(error)

    def _timeout_cb(self) -> None:
        """aiosmtpd's timer ran out (idle, or DATA's budget): say why, then close."""
        # Said only once greeted: a connection still owing its PROXY header hears nothing.
        self._close_with(self._timeout_reply if self._greeted else None)

    def close_for_shutdown(self) -> None:
        """Tell the client we are going away (421) and close; used when draining."""
        self._close_with(policy.SHUTTING_DOWN)

    def _close_with(self, reply: str | None) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if reply is not None:
            # A connection's transport writes (aiosmtpd types it as the base class); one whose
            # peer is already gone may raise, and we are closing it anyway.
            with contextlib.suppress(Exception):
                cast(asyncio.WriteTransport, transport).write((reply + "\r\n").encode())
        transport.close()

    async def _handle_client(self) -> None:
        assert self.session is not None and self.transport is not None
        if self._proxy_header_timeout is not None and not await self._read_proxy_header():
            self.transport.close()
            return
        client = self.session.client
        host = client[0] if client is not None else None
        self._trusted = policy.is_trusted(host, self._networks)
        refusal = policy.connection_refusal(host, self._networks, self._arrival,
                                            self._max_connections, self._counters.draining,
                                            auth_offered=self.offers_auth)
        if refusal is not None:
            await self.push(refusal)
            self.transport.close()
            return
        self._greeted = True
        await super()._handle_client()

    async def _read_proxy_header(self) -> bool:
        """Take the PROXY header off the stream and make its client ours; False: refuse."""
        assert self.session is not None and self._proxy_header_timeout is not None
        proxy = self.session.client
        if not policy.is_trusted(proxy[0] if proxy is not None else None, self._networks):
            log.info("smtp.proxy_refused", peer=self.session.client_text, kind="untrusted_proxy",
                     reason="the proxy's address is not in smtp.trusted_networks")
            return False
        buf = b""
        try:
            async with asyncio.timeout(self._proxy_header_timeout):
                while (header := parse_proxy_header(buf)) is None:
                    chunk = await self._reader.read(MAX_HEADER - len(buf))
                    if not chunk:
                        raise ProxyError("closed before the header ended", "closed")
                    buf += chunk
        except ProxyError as e:
            log.info("smtp.proxy_refused", peer=self.session.client_text, kind=e.fault,
                     reason=str(e))
            return False
        except TimeoutError:
            log.info("smtp.proxy_refused", peer=self.session.client_text, kind="timeout",
                     reason=f"no header within {self._proxy_header_timeout:g}s")
            return False
        if len(buf) > header.length:  # a client that spoke first: its bytes are commands
            streams.unread(self._reader, buf[header.length:])
        if header.source is not None:
            self._client_peer = self.session.client = header.source
        return True

    # The overrides keep aiosmtpd's @syntax: HELP lists a command only when it carries one.
    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.tls_active:  # aiosmtpd would wrap TLS in TLS (RFC 3207 §4)
            await self.push(policy.TLS_ALREADY_ACTIVE)
            return
        await super().smtp_STARTTLS(arg)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        assert self.session is not None
        if self.session.host_name:  # before EHLO aiosmtpd's 503 comes first
            refusal = policy.mail_refusal(
                tls=self.tls_active, require_tls=self._require_tls,
                trusted=self._trusted, authenticated=bool(self.session.authenticated))
            if refusal is not None:
                log_refusal("MAIL", self.session, refusal)
                await self.push(refusal)
                return
        await super().smtp_MAIL(arg)

    @syntax("XFORWARD attribute=value ...", when="offers_xforward")
    async def smtp_XFORWARD(self, arg: str | None) -> None:
        """Postfix's XFORWARD (xforward.py): the client a trusted relay got the next message from,
        kept on the envelope, so it ends with the transaction it was sent for."""
        assert self.session is not None and self.envelope is not None
        reply = xforward.command_refusal(in_transaction=self.envelope.mail_from is not None,
                                         has_arguments=bool(arg), trusted=self.offers_xforward)
        if reply is None:
            assert arg is not None
            try:
                self.envelope.forwarded = xforward.updated(self.envelope.forwarded, arg)
                reply = xforward.XFORWARD_OK
            except xforward.XforwardError as e:
                reply = e.reply
        if reply != xforward.XFORWARD_OK:
            log_refusal("XFORWARD", self.session, reply)
        await self.push(reply)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address split, without its RFC 5322 parser for the common form."""
        simple = policy.simple_path(arg) if arg else None
        limit = self.local_part_limit
        if simple is not None and not (limit and len(simple[0].rpartition("@")[0]) > limit):
            return simple
        result: tuple[str | None, str | None] = super()._getaddr(arg)
        return result

    def _received_protocol(self) -> str:
        """RFC 3848's name for the Received header: ESMTP or LMTP, +S over TLS, +A after AUTH."""
        assert self.session is not None
        name = self._handler.protocol_name
        if self.tls_active:
            name += "S"
        if self.session.authenticated:
            name += "A"
        return name

    def _data_replies(self, reply: str) -> list[str]:
        """The replies that end DATA: SMTP gives one for the whole envelope."""
        return [reply]

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's checks and 354, then our reader and the 250 rule (SPEC §4)."""
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
            reply = await self._handler.receive_message(
                self.session, self.envelope, self._received_protocol(), self._read_message)
            replies = self._data_replies(reply)
            self.envelope = self._create_envelope()  # as aiosmtpd does after DATA
            await self.push("\r\n".join(replies))
        finally:
            self._counters.in_data -= 1

    async def _read_message(self, spool: Spool) -> tuple[DataOutcome, int]:
        """DATA's bytes into `spool` (data.py), aiosmtpd's timer following the time budget."""
        self._timeout_reply = policy.DATA_TOO_SLOW
        try:
            result = await read_message(self._reader, spool, self._handler.max_size,
                                        TimeBudget(self._timeout, self.loop.time),
                                        self._reset_timeout)
        finally:
            self._timeout_reply = policy.IDLE_TIMEOUT
        self._reset_timeout()  # storing the message and the next command: idle rules again
        return result


class PostroomLMTP(PostroomSMTP, LMTP):
    """One LMTP connection (RFC 2033): LHLO instead of HELO and EHLO (those get 500), and one
    reply per accepted recipient after DATA."""

    def _data_replies(self, reply: str) -> list[str]:
        """One reply per accepted recipient, in RCPT order (RFC 2033 §4.2).

        Ingest stores one message for the whole envelope, durable for every recipient at once,
        so each recipient's outcome is that message's: its 250 once stored, else the same 451
        (our failure: the client retries that recipient) or 552.
        """
        assert self.envelope is not None
        return [reply for _recipient in self.envelope.rcpt_tos]
