"""aiosmtpd null sink: stock aiosmtpd `SMTP` served with `loop.create_server`, DATA answered 250.

The reference for "what aiosmtpd alone costs": no threaded Controller, no storage, no parsing
(the handler drops the content and replies `250 OK`). Runs on uvloop by default, as postroom
does. Binds to loopback only; stops on SIGTERM/SIGINT and prints its counters to stderr.

    python -m bench.sink_aiosmtpd --port 2526
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


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


async def serve(host: str, port: int, size_limit: int) -> None:
    handler = NullHandler()
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return SMTP(handler, hostname="aiosmtpd.bench.test", ident="aiosmtpd null sink",
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
    args = ap.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        sys.exit("sink_aiosmtpd: bind to a loopback address only")
    if args.loop == "uvloop":
        import uvloop
        uvloop.run(serve(args.host, args.port, args.size_limit))
    else:
        asyncio.run(serve(args.host, args.port, args.size_limit))


if __name__ == "__main__":
    main()
