"""The SMTP and LMTP front: aiosmtpd's protocol with our policy, a chunked DATA reader and the
250 rule.

aiosmtpd reads DATA one line at a time, refuses long lines and lets its idle timer cut off a
large transfer; `PostroomSMTP.smtp_DATA` replaces that with a bytes-level reader (end marker and
dot-unstuffing found with bytes operations, size limit enforced while reading, a time budget
that moving data earns back and a trickle cannot). Commands, EHLO and STARTTLS stay aiosmtpd's;
the PROXY header, who must use TLS or AUTH before MAIL, and the AUTH mechanisms (scrypt off the
loop, never a name or password in a log line) are ours.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    Session,
    TLSSetupException,
    syntax,
)

from daemon.directory import Directory, Resolved
from daemon.passwords import AuthUsers
from daemon.pipeline import Delivery, Ingest
from daemon.smtp import policy
from daemon.smtp.framing import Unstuffer
from daemon.smtp.proxy import MAX_HEADER, ProxyError, parse_proxy_header
from daemon.smtp.tls import TlsFiles
from storage.errors import TransientError
from storage.spool import Spool

log = structlog.get_logger("postroom.smtp")

_CHUNK = 1 << 17  # how much DATA we take from the reader at a time


@dataclass
class SmtpCounters:
    """Live numbers shared by every connection (for limits, drain and metrics)."""

    open_connections: int = 0
    connections_total: int = 0
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

    async def handle_EHLO(self, server: PostroomSMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if not server.offers_auth:  # aiosmtpd lists its mechanisms after STARTTLS regardless
            responses = [r for r in responses if not r.startswith("250-AUTH")]
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
        refusal = (policy.sender_refusal(address)
                   or policy.declared_size_refusal(mail_options, self.max_size))
        if refusal:
            _log_refusal("MAIL", session, refusal)
            return refusal
        # Backpressure: with extraction behind (`pipeline.max_lag`), the reply to MAIL waits a
        # little, so relays send at the pace the whole job keeps, not only the 250's.
        await self.ingest.admit()
        if self.counters.draining:
            return policy.SHUTTING_DOWN
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.resolved = []  # type: ignore[attr-defined]
        return policy.SENDER_OK

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        resolved: list[Resolved] = envelope.resolved  # type: ignore[attr-defined]
        malformed = policy.address_refusal(address)
        if malformed:
            _log_refusal("RCPT", session, malformed)
            return malformed
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


_AUTH_HANDLED = AuthResult(success=False, handled=True)  # the reply is already sent


class PostroomSMTP(SMTP):
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

    # The customary LOGIN prompts (aiosmtpd's own end in a NUL byte).
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def __init__(self, handler: PostroomHandler, counters: SmtpCounters,
                 networks: tuple[policy.Network, ...], max_connections: int,
                 connections: set[PostroomSMTP], *, tls: TlsFiles | None = None,
                 users: AuthUsers | None = None, require_tls: bool = False,
                 proxy_timeout: float | None = None, **kwargs: Any) -> None:
        # Set before aiosmtpd's __init__, which looks at every attribute to find auth_ methods.
        self.offers_auth = users is not None
        self._users = users
        self._require_tls = require_tls
        # aiosmtpd's AUTH checks (538 before TLS, AUTH advertised only after STARTTLS) stay on;
        # the context is taken now, so a reload() applies from the next connection on.
        super().__init__(handler, tls_context=tls.context if tls is not None else None,
                         auth_require_tls=True, **kwargs)
        # Not aiosmtpd's proxy_protocol_timeout: its reader has no size bound for v2 headers
        # and lets a short read escape as an exception; ours is daemon/proxy.py.
        self._proxy_header_timeout = proxy_timeout
        # aiosmtpd keeps this dict on the class and grows it on every EHLO; make it ours.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self._handler = handler
        self._counters = counters
        self._networks = networks
        self._max_connections = max_connections
        self._connections = connections
        self._arrival = 0  # open connections, this one included, when it arrived
        self._client_peer: tuple[str, int] | None = None  # from the PROXY header
        self._trusted = False
        self._greeted = False
        self._auth_failures = 0
        self._timeout_reply = policy.IDLE_TIMEOUT  # what the client hears when its timer fires

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgrade = self.transport is not None  # the STARTTLS upgrade of a connection we have
        if not upgrade:
            self._counters.open_connections += 1
            self._counters.connections_total += 1
            self._arrival = self._counters.open_connections
            self._connections.add(self)
        super().connection_made(transport)
        if upgrade and self._client_peer is not None and self.session is not None:
            # aiosmtpd starts a new session with the socket's peer: keep the proxied client.
            self.session.peer = self._client_peer  # type: ignore[assignment]  # a peername

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
            log.info("smtp.tls_failed", peer=_peer_text(self.session),
                     reason=str(error.__cause__ or error)[:200])
            return policy.TRY_LATER
        return await self._handler.handle_exception(error)

    def _timeout_cb(self) -> None:
        # Said only once greeted: a connection still owing its PROXY header hears nothing.
        if self._greeted and self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self._writer.write((self._timeout_reply + "\r\n").encode())
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def close_for_shutdown(self) -> None:
        """Tell the client we are going away (421) and close; used when draining."""
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self._writer.write((policy.SHUTTING_DOWN + "\r\n").encode())
            self.transport.close()

    async def _handle_client(self) -> None:
        assert self.session is not None and self.transport is not None
        if self._proxy_header_timeout is not None and not await self._read_proxy_header():
            self.transport.close()
            return
        peer = self.session.peer
        host = peer[0] if isinstance(peer, tuple) else None
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
        """Take the PROXY header off the stream and make its client the peer; False: refuse."""
        assert self.session is not None and self._proxy_header_timeout is not None
        proxy = self.session.peer
        if not policy.is_trusted(proxy[0] if isinstance(proxy, tuple) else None, self._networks):
            log.info("smtp.proxy_refused", peer=_peer_text(self.session),
                     reason="the proxy's address is not in smtp.trusted_networks")
            return False
        buf = b""
        try:
            async with asyncio.timeout(self._proxy_header_timeout):
                while (header := parse_proxy_header(buf)) is None:
                    chunk = await self._reader.read(MAX_HEADER - len(buf))
                    if not chunk:
                        raise ProxyError("closed before the header ended")
                    buf += chunk
        except ProxyError as e:
            log.info("smtp.proxy_refused", peer=_peer_text(self.session), reason=str(e))
            return False
        except TimeoutError:
            log.info("smtp.proxy_refused", peer=_peer_text(self.session),
                     reason=f"no header within {self._proxy_header_timeout:g}s")
            return False
        if len(buf) > header.length:  # a client that spoke first: its bytes are commands
            self._reader._buffer[0:0] = buf[header.length:]  # type: ignore[attr-defined]
        if header.source is not None:
            self._client_peer = header.source
            # aiosmtpd annotates `peer` as str; it holds the socket's peername tuple.
            self.session.peer = header.source  # type: ignore[assignment]
        return True

    # The overrides keep aiosmtpd's @syntax: HELP lists a command only when it carries one.
    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_protocol is not None:  # aiosmtpd would wrap TLS in TLS (RFC 3207 §4)
            await self.push(policy.TLS_ALREADY_ACTIVE)
            return
        await super().smtp_STARTTLS(arg)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        assert self.session is not None
        if self.session.host_name:  # before EHLO aiosmtpd's 503 comes first
            refusal = policy.mail_refusal(
                tls=self._tls_protocol is not None, require_tls=self._require_tls,
                trusted=self._trusted, authenticated=bool(self.session.authenticated))
            if refusal is not None:
                _log_refusal("MAIL", self.session, refusal)
                await self.push(refusal)
                return
        await super().smtp_MAIL(arg)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address split, without its RFC 5322 parser for the common form."""
        simple = policy.simple_path(arg) if arg else None
        limit = self.local_part_limit
        if simple is not None and not (limit and len(simple[0].rpartition("@")[0]) > limit):
            return simple
        result: tuple[str | None, str | None] = super()._getaddr(arg)
        return result

    @syntax("AUTH <mechanism>", when="offers_auth")
    async def smtp_AUTH(self, arg: str) -> None:
        """aiosmtpd's AUTH (538 before TLS, 503 when repeated), counting the failures."""
        assert self.session is not None and self.transport is not None
        if not self.offers_auth:
            await self.push(policy.AUTH_NOT_OFFERED)
            return
        already = bool(self.session.authenticated)
        await super().smtp_AUTH(arg)
        if already or self.session.authenticated:
            return
        self._auth_failures += 1
        if self._auth_failures >= policy.MAX_AUTH_FAILURES:
            log.info("smtp.auth_closed", peer=_peer_text(self.session),
                     failures=self._auth_failures)
            await self.push(policy.TOO_MANY_AUTH_FAILURES)
            # As aiosmtpd's QUIT does: the command loop ends at its next await.
            assert self._handler_coroutine is not None
            self._handler_coroutine.cancel()
            self.transport.close()

    async def auth_PLAIN(self, _: SMTP, args: list[str]) -> AuthResult:
        """RFC 4616: authzid NUL authcid NUL password; an authzid other than the user fails."""
        blob = await self._auth_response(args[1] if len(args) > 1 else None, "")
        if blob is None:
            return _AUTH_HANDLED
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return _AUTH_HANDLED
        authzid, login, password = parts
        return await self._check_credentials("PLAIN", login, password,
                                             authzid_ok=authzid in (b"", login))

    async def auth_LOGIN(self, _: SMTP, args: list[str]) -> AuthResult:
        login = await self._auth_response(args[1] if len(args) > 1 else None,
                                          self.AuthLoginUsernameChallenge)
        if login is None:
            return _AUTH_HANDLED
        password = await self._auth_response(None, self.AuthLoginPasswordChallenge)
        if password is None:
            return _AUTH_HANDLED
        return await self._check_credentials("LOGIN", login, password)

    async def _auth_response(self, initial: str | None, challenge: str) -> bytes | None:
        """The client's decoded answer: the initial response given with AUTH, else one asked
        for with 334. None when malformed or cancelled with "*" (the 501 is already sent)."""
        if initial is None:
            answer = await self.challenge_auth(challenge)
            return None if answer is MISSING else bytes(answer)
        if initial == "=":  # RFC 4954 §4: an empty initial response
            return b""
        try:
            return base64.b64decode(initial, validate=True)
        except binascii.Error:
            await self.push("501 5.5.2 Can't decode base64")
            return None

    async def _check_credentials(self, mechanism: str, login: bytes, password: bytes,
                                 authzid_ok: bool = True) -> AuthResult:
        assert self._users is not None and self.session is not None
        user = None
        if authzid_ok:  # no acting as another user: that is a failure like a wrong password
            # scrypt takes ~50 ms of CPU: in a thread, so other connections keep being served.
            user = await asyncio.to_thread(self._users.check, login, password)
        if user is None:
            # Neither the name nor the password: a typo'd password in the name field is common.
            log.info("smtp.auth_failed", peer=_peer_text(self.session), mechanism=mechanism)
            return AuthResult(success=False, handled=False, message=policy.AUTH_INVALID)
        log.info("smtp.authenticated", peer=_peer_text(self.session), user=user,
                 mechanism=mechanism)
        return AuthResult(success=True, auth_data=user, message=policy.AUTH_OK)

    def _received_protocol(self) -> str:
        """RFC 3848's name for the Received header: ESMTP or LMTP, +S over TLS, +A after AUTH."""
        assert self.session is not None
        name = self._handler.protocol_name
        if self._tls_protocol is not None:
            name += "S"
        if self.session.authenticated:
            name += "A"
        return name

    def _data_replies(self, reply: str) -> list[str]:
        """The replies that end DATA: SMTP gives one for the whole envelope."""
        return [reply]

    async def _read_data(self, limit: int, spool: Spool) -> tuple[str, int]:
        """Read DATA up to the end marker into `spool`: ("ok" | "too_big" | "failed", size).

        The message never sits whole in memory: each chunk is unstuffed and handed on, keeping
        back only a tail that may hold the start of the end marker or of a stuffed line.
        `size` counts unstuffed bytes; past `limit` (or after a spool error) the rest is read
        and dropped, so the connection stays in step with the client.

        Time: a read may take at most the budget left, which starts at `smtp.timeout`, is spent
        by the time each read waits and earns back one second per `policy.MIN_DATA_RATE` bytes
        received, never above `smtp.timeout`. So a gap as long as the timeout cuts the client
        off, as does a trickle: a byte a second runs the budget out in about `smtp.timeout`,
        where an idle timer reset on every chunk would let it hold its slot for ever. A burst
        cannot bank time for a trickle later. (Postfix's smtpd_min_data_rate works this way.)
        """
        reader = self._reader
        loop = asyncio.get_running_loop()
        budget = self._timeout_duration
        last = loop.time()
        self._timeout_reply = policy.DATA_TOO_SLOW
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
                now = loop.time()
                budget = min(self._timeout_duration,
                             budget - (now - last) + len(chunk) / policy.MIN_DATA_RATE)
                last = now
                self._reset_timeout(max(budget, 0.001))  # spent: the timer fires at once
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
                    self._reset_timeout()  # storing the message and the next command: idle rules
                    return state, size
        finally:
            reader._limit = saved_limit  # type: ignore[attr-defined]
            self._timeout_reply = policy.IDLE_TIMEOUT

    @syntax("DATA")
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
            protocol=self._received_protocol())
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
        replies = self._data_replies(reply)
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("\r\n".join(replies))


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
