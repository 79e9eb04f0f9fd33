"""aiosmtpd's Session (per connection) and Envelope (per transaction), with the fields we add typed.

`SmtpBase` has aiosmtpd make these through its documented factories (`_create_session`,
`_create_envelope`), so every session and envelope is ours, from the first on; no code may set
attributes of its own on aiosmtpd's objects.
"""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import SMTP, Envelope, Session

from daemon.directory import Resolved
from daemon.smtp.xforward import Forwarded

Address = tuple[str, int]  # (host, port)


def socket_address(peername: object) -> Address | None:
    """(host, port) of an IP socket's peername (IPv6 adds two fields); None for other sockets."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        return str(peername[0]), int(peername[1])
    return None


class PostroomSession(Session):
    """One connection's state; `client` is whom we serve.

    That is the PROXY header's source when there was one, else the socket's peer (aiosmtpd's
    `peer`, which is left as the socket says); None on a socket without an address.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.client: Address | None = None

    @property
    def client_text(self) -> str:
        """The client as logs and the Received header name it: "host:port"."""
        if self.client is not None:
            return f"{self.client[0]}:{self.client[1]}"
        return str(self.peer)


class PostroomEnvelope(Envelope):
    """One transaction's state; `resolved` holds the agents of `rcpt_tos`, in RCPT order.

    `forwarded` is what a trusted relay said with XFORWARD before MAIL. It lives and dies with
    the envelope, which is Postfix's rule: "At the end of the next MAIL FROM transaction (i.e.
    RSET or DOT), all XFORWARD attributes are reset to the real client information"; as in
    Postfix's smtpd, HELO, EHLO and STARTTLS (which make a new envelope too) reset them as well.
    """

    def __init__(self) -> None:
        super().__init__()
        self.resolved: list[Resolved] = []
        # A bounce for one of our outbound messages (its VERP address was the recipient).
        self.bounce_for: str | None = None
        self.forwarded: Forwarded | None = None


class SmtpBase(SMTP):
    """aiosmtpd's SMTP whose sessions and envelopes are ours (a new envelope at every RSET,
    HELO, EHLO, STARTTLS and after DATA, as aiosmtpd makes them)."""

    session: PostroomSession | None
    envelope: PostroomEnvelope | None

    def _create_session(self) -> PostroomSession:
        return PostroomSession(self.loop)

    def _create_envelope(self) -> PostroomEnvelope:
        return PostroomEnvelope()
