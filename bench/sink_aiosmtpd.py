"""aiosmtpd null sink: stock aiosmtpd `SMTP` served with `loop.create_server`, DATA answered 250.

The reference for "what aiosmtpd alone costs": no threaded Controller, no storage, no parsing
(the handler drops the content and replies `250 OK`). Runs on uvloop by default, as postroom
does. Binds to loopback only; stops on SIGTERM/SIGINT and prints its counters to stderr.

With `--chunked`, DATA is read as postroom reads it (`ChunkedSMTP`: 128 KiB reads through
`daemon.framing.Unstuffer`, the bytes dropped): the ceiling of the front issue 3 prescribes,
aiosmtpd's SMTP class for the commands and a chunked DATA reader, with nothing stored.

    python -m bench.sink_aiosmtpd --port 2526 [--chunked]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from daemon.smtp.framing import Unstuffer

_CHUNK = 1 << 17


class NullHandler:
    """Counts and drops every message."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.content
        self.messages += 1
        self.bytes += len(content or b"")
        return "250 OK"


class ChunkedSMTP(SMTP):
    """aiosmtpd with DATA read in chunks and unstuffed by postroom's framer, then dropped."""

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = self._reader
        saved = reader._limit  # type: ignore[attr-defined]
        reader._limit = max(saved, _CHUNK)  # type: ignore[attr-defined]
        framing = Unstuffer()
        size = 0
        try:
            while not framing.done:
                chunk = await reader.read(_CHUNK)
                if not chunk:
                    raise ConnectionResetError("connection closed during DATA")
                size += len(framing.feed(chunk))
            if framing.leftover:
                reader._buffer[0:0] = framing.leftover  # type: ignore[attr-defined]
        finally:
            reader._limit = saved  # type: ignore[attr-defined]
        handler: NullHandler = self.event_handler
        handler.messages += 1
        handler.bytes += size
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK")


async def serve(host: str, port: int, size_limit: int, chunked: bool = False) -> None:
    handler = NullHandler()
    loop = asyncio.get_running_loop()
    cls = ChunkedSMTP if chunked else SMTP

    def protocol() -> SMTP:
        return cls(handler, hostname="aiosmtpd.bench.test", ident="aiosmtpd null sink",
                   data_size_limit=size_limit, decode_data=False, loop=loop)

    server = await loop.create_server(protocol, host=host, port=port, backlog=1024,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening {host}:{port}", flush=True)
    await stop.wait()
    server.close()
    print(json.dumps({"messages": handler.messages, "bytes": handler.bytes}), file=sys.stderr,
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2526)
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ap.add_argument("--size-limit", type=int, default=64 * 1024 * 1024)
    ap.add_argument("--chunked", action="store_true",
                    help="read DATA as postroom does (chunks through its framer)")
    args = ap.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        sys.exit("sink_aiosmtpd: bind to a loopback address only")
    if args.loop == "uvloop":
        import uvloop
        uvloop.run(serve(args.host, args.port, args.size_limit, args.chunked))
    else:
        asyncio.run(serve(args.host, args.port, args.size_limit, args.chunked))


if __name__ == "__main__":
    main()
