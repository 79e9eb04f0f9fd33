"""A capturing SMTP server for the outbound tests: the far end of a relay, on loopback.

It runs aiosmtpd in a thread of the test process, records every envelope it accepts, and can
answer chosen recipients with a chosen reply (a 4xx to defer, a 5xx to bounce). `stop()` and
`start()` on the same port model a relay going down and coming back.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class _Handler:
    received: list[Captured] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)  # recipient → RCPT reply
    lock: threading.Lock = field(default_factory=threading.Lock)
    # While set, DATA is not answered until it is cleared (a relay hanging mid-transaction).
    hold: threading.Event = field(default_factory=threading.Event)
    holding: threading.Event = field(default_factory=threading.Event)  # a DATA is being held

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        assert envelope.content is not None and envelope.mail_from is not None
        while self.hold.is_set():
            self.holding.set()
            await asyncio.sleep(0.02)
        data = envelope.content if isinstance(envelope.content, bytes) else \
            envelope.content.encode()
        with self.lock:
            self.received.append(Captured(envelope.mail_from, list(envelope.rcpt_tos), data))
        return "250 2.0.0 Ok: captured"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CaptureServer:
    """`with CaptureServer() as cap:` … `cap.wait_for(n)`; `cap.url` is for `outbound.relay`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = _Handler()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Captured]:
        with self.handler.lock:
            return list(self.handler.received)

    def start(self) -> None:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                      decode_data=False)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, within: float = 30.0) -> list[Captured]:
        """The captured messages once there are `count` of them; AssertionError at the
        deadline."""
        deadline = time.monotonic() + within
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} captured"
            time.sleep(0.02)
        return self.received

    def __enter__(self) -> CaptureServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
