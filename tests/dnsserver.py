"""An authoritative DNS server on loopback for the tests (dnslib), UDP and TCP on one free port.

Records come from a dict (`{"example.test": {"TXT": ["v=spf1 -all"], "A": ["127.0.0.1"]}}`) or
the `txt`/`a`/`mx`/`cname` helpers; knobs make a name misbehave: `drop` (never answered),
`delay` (answered late), `servfail`, and CNAME loops (the server hands out the chain, up to 20
hops, as an authoritative server would). A TXT value is split into 255-byte strings; an answer
over 512 bytes goes out on UDP truncated (TC=1, question kept) so the client retries on TCP.
`seen` counts the queries per (name, type), for tests that count work instead of timing it.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dnslib import CNAME, MX, QTYPE, RCODE, RR, SOA, TXT, A, DNSError, DNSHeader, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

UDP_LIMIT = 512  # no EDNS on our side: RFC 1035's limit


def fq(name: str) -> str:
    """`name` as the server keys it: lower case with the final dot."""
    return name.lower().rstrip(".") + "."


class Zone(BaseResolver):  # type: ignore[misc]  # dnslib has no types (bench is checked)
    """The records, the knobs and the query counts (thread-safe: dnslib answers in threads)."""

    def __init__(self, records: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.rr: dict[tuple[str, str], list[tuple[Any, int]]] = {}
        self.cnames: dict[str, str] = {}
        self.drop: set[str] = set()
        self.servfail: set[str] = set()
        self.delay: dict[str, float] = {}
        self.seen: collections.Counter[tuple[str, str]] = collections.Counter()
        self.protocols: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        for name, by_type in (records or {}).items():
            for rtype, values in by_type.items():
                if rtype.upper() == "CNAME":
                    self.cname(name, values)
                    continue
                for value in values if isinstance(values, list) else [values]:
                    args = value if isinstance(value, tuple) else (value,)
                    getattr(self, rtype.lower())(name, *args)

    def txt(self, name: str, text: str | bytes, ttl: int = 300) -> None:
        data = text.encode() if isinstance(text, str) else text
        chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
        self.rr.setdefault((fq(name), "TXT"), []).append((TXT(chunks), ttl))

    def a(self, name: str, address: str, ttl: int = 300) -> None:
        self.rr.setdefault((fq(name), "A"), []).append((A(address), ttl))

    def mx(self, name: str, preference: int, host: str, ttl: int = 300) -> None:
        self.rr.setdefault((fq(name), "MX"), []).append((MX(host, preference), ttl))

    def cname(self, name: str, target: str) -> None:
        self.cnames[fq(name)] = fq(target)

    def count(self, name: str | None = None, qtype: str | None = None) -> int:
        """Queries seen for `name` (any name if None) and `qtype` (any type if None)."""
        with self._lock:
            return sum(n for (qname, t), n in self.seen.items()
                       if (name is None or qname == fq(name)) and (qtype is None or t == qtype))

    def names(self) -> set[str]:
        """Every name asked so far."""
        with self._lock:
            return {qname for qname, _ in self.seen}

    def reset_counts(self) -> None:
        with self._lock:
            self.seen.clear()
            self.protocols.clear()

    def _exists(self, name: str) -> bool:
        return name in self.cnames or any(key[0] == name for key in self.rr)

    def resolve(self, request: Any, handler: Any) -> Any:
        qname = str(request.q.qname).lower()
        qtype = QTYPE[request.q.qtype]
        with self._lock:
            self.seen[(qname, qtype)] += 1
            self.protocols[handler.protocol] += 1
        if qname in self.drop:
            raise DNSError("dropped on purpose")  # the handler sends nothing back
        if qname in self.delay:
            time.sleep(self.delay[qname])
        reply = request.reply()
        if qname in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        current, hops = qname, 0
        while current in self.cnames and hops < 20:
            target = self.cnames[current]
            reply.add_answer(RR(current, QTYPE.CNAME, rdata=CNAME(target), ttl=60))
            current, hops = target, hops + 1
        for rdata, ttl in self.rr.get((current, qtype), []):
            reply.add_answer(RR(current, getattr(QTYPE, qtype), rdata=rdata, ttl=ttl))
        if not reply.rr and not self._exists(current):
            reply.header.rcode = RCODE.NXDOMAIN
        if not reply.rr:  # negative answers carry an SOA so that resolvers cache them
            reply.add_auth(RR("test.", QTYPE.SOA, ttl=60, rdata=SOA(
                "ns.test.", "hostmaster.test.", (1, 3600, 600, 86400, 60))))
        return reply


class TruncatingHandler(DNSHandler):  # type: ignore[misc]
    """UDP answers over 512 bytes go out as TC=1 *with the question*, so the client retries on
    TCP. (dnslib's own `udplen` truncation drops the question, and dnspython then rejects the
    reply and waits out its timeout instead of retrying.)"""

    def handle(self) -> None:
        # The client may give up on a delayed answer and close its TCP socket first.
        with contextlib.suppress(OSError):
            super().handle()

    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        reply = self.server.resolver.resolve(request, self)
        packed: bytes = reply.pack()
        if self.protocol == "udp" and len(packed) > UDP_LIMIT:
            header = DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap, tc=1)
            packed = DNSRecord(header, q=request.q).pack()
        return packed


class RunningDns:
    """A started server: `address` is what `auth.dns_servers` takes."""

    def __init__(self, zone: Zone, port: int, servers: list[Any]) -> None:
        self.zone = zone
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self._servers = servers

    def stop(self) -> None:
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()


def start_dns(zone: Zone) -> RunningDns:
    """Serve `zone` on a free loopback port, UDP and TCP, in daemon threads."""
    quiet = DNSLogger(logf=lambda *a, **k: None)
    for _ in range(20):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        started: list[Any] = []
        try:
            for tcp in (False, True):
                started.append(DNSServer(zone, "127.0.0.1", port, tcp=tcp, logger=quiet,
                                         handler=TruncatingHandler))
        except OSError:  # the port was taken for one of the two protocols meanwhile
            for server in started:
                server.server.server_close()
            continue
        for server in started:
            server.start_thread()
        return RunningDns(zone, port, started)
    raise RuntimeError("no free loopback port for the test DNS server")


@contextmanager
def running_dns(records: Mapping[str, Mapping[str, Any]] | None = None) -> Iterator[RunningDns]:
    """`start_dns(Zone(records))` for the length of a `with` block."""
    dns = start_dns(Zone(records))
    try:
        yield dns
    finally:
        dns.stop()
