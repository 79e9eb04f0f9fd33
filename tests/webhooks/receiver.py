"""A webhook receiver for the tests: an HTTP server on loopback, in a thread of the test
process, that verifies each POST's signature with the `standardwebhooks` package (an
implementation independent of ours) and records what arrived.

It answers 204, or what `answer` says (a status to fail with, 410 to say Gone, a redirect to
`location`) with `answer_body` (none with a 204), can `hang`
(answer after `hang_for` seconds, beyond the daemon's timeout), and `stop()` then `start()`
on the same port model an endpoint that goes away and comes back.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Arrival:
    webhook_id: str
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    verified: bool
    at: float  # time.monotonic() when it arrived


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.secrets: list[str] = []  # a POST verifies when any of them verifies it
        self.arrivals: list[Arrival] = []
        self.answer = 204
        self.answer_body = b"ok"
        self.location: str | None = None  # a Location header to answer with (a redirect)
        self.hang_for = 0.0
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._arrived(body, headers)
                if receiver.hang_for:
                    time.sleep(receiver.hang_for)
                body = b"" if receiver.answer in (204, 304) else receiver.answer_body
                self.send_response(receiver.answer)
                if receiver.location:
                    self.send_header("location", receiver.location)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _arrived(self, body: bytes, headers: dict[str, str]) -> None:
        verified = False
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                continue
        with self.lock:
            self.arrivals.append(Arrival(headers.get("webhook-id", ""), json.loads(body), body,
                                         headers, verified, time.monotonic()))

    def bodies(self, type_: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [a.body for a in self.arrivals if type_ is None or a.body["type"] == type_]

    def ids(self) -> set[str]:
        with self.lock:
            return {a.webhook_id for a in self.arrivals}
