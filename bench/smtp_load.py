"""Bounded asyncio SMTP load generator: postroom's own, a raw SMTP client over streams.

Every message is text + K base64 attachments of S random bytes. A pool of distinct bodies is
built, CRLF-normalised and dot-stuffed before the clock starts, and so is one unique
`X-Bench-Seq` header line per message: message i is `header(i) + body(i mod pool)`, so no two
messages of a run (or of two runs) have the same bytes, which postroom's deduplication would
otherwise answer without storing anything, while memory stays bounded for large messages.

C workers each open one connection, say EHLO once and reuse the connection for all their
messages (MAIL, RCPT, DATA, payload; no PIPELINING). Latency is from writing MAIL FROM to
reading the reply after the final dot. The run stops starting messages after `-n` messages or
`--max-seconds`, whichever comes first; messages in flight then get `--grace` seconds, after
which workers are cancelled. Only loopback targets are accepted.

Reports msgs/s, MB/s (MB = 10^6 bytes of raw message, header line included), p50/p99, errors by
reply code, the generator's own CPU, and the queued message ids (`queued as <id>` of each 250)
with the wall-clock time each 250 was read, for time-to-ready measurements.

    python -m bench.smtp_load --port 2525 --workload small -c 16 -n 100000 --max-seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import re
import resource
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

SENDER = "load@sender.test"
RECIPIENT = "inbound@bench.test"
MB = 1_000_000


@dataclass(frozen=True)
class Workload:
    """A message shape and the bounds the runner uses for it."""

    name: str
    attachments: int
    attachment_size: int
    max_messages: int  # cap on messages per run (the time bound usually ends the run first)
    pool: int  # distinct bodies built before the clock starts


WORKLOADS: dict[str, Workload] = {
    "small": Workload("small", 1, 20_000, 300_000, 512),
    "medium": Workload("medium", 2, 1_000_000, 30_000, 8),
    "large": Workload("large", 1, 10_000_000, 3_000, 4),
}

_PARAGRAPH = (
    "Hello,\n\nthe documents you asked for are attached. This paragraph is here so that the\n"
    "text part has a realistic size and a few lines of ordinary prose in it.\n\n"
    "Regards,\nthe postroom load generator\n"
)


def build_body(index: int, attachments: int, size: int) -> bytes:
    """One RFC 5322 message with CRLF line ends; attachments are fresh random bytes."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = f"Load Generator <{SENDER}>"
    msg["To"] = f"Bench Inbox <{RECIPIENT}>"
    msg["Subject"] = f"bench body {index}: {attachments} x {size} bytes"
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<body{index}.{os.urandom(6).hex()}@sender.test>"
    msg.set_content(f"Body {index}.\n\n" + _PARAGRAPH * 4)
    for j in range(attachments):
        msg.add_attachment(os.urandom(size), maintype="application", subtype="octet-stream",
                           filename=f"bench-{index}-{j}.bin")
    raw = re.sub(rb"\r?\n", b"\r\n", msg.as_bytes())
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def dot_stuff(raw: bytes) -> bytes:
    """The DATA payload on the wire: leading dots doubled, then the end-of-data line."""
    stuffed = re.sub(rb"(?m)^\.", b"..", raw)
    return stuffed + b".\r\n"


def seq_headers(count: int, nonce: str) -> list[bytes]:
    """One distinct header line per message (never starts with a dot, so needs no stuffing)."""
    prefix = f"X-Bench-Seq: {nonce}-".encode()
    return [prefix + b"%09d\r\n" % i for i in range(count)]


def pool_size(wanted: int, n: int, attachments: int, size: int, budget_mb: int) -> int:
    """Distinct bodies to build: what was asked for, bounded by `n` and a memory budget."""
    approx = attachments * size * 4 // 3 + 4096
    return max(1, min(wanted, n, (budget_mb * MB) // approx))


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def require_loopback(host: str) -> None:
    """Exit unless every address `host` resolves to is a loopback address."""
    for info in socket.getaddrinfo(host, None):
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not addr.is_loopback:
            sys.exit(f"smtp_load: refusing non-loopback target {host} ({addr})")


class ReplyError(Exception):
    """The server said something other than what the step needs."""

    def __init__(self, code: int, line: bytes, stage: str) -> None:
        super().__init__(f"{stage}: {line!r}")
        self.code, self.line, self.stage = code, line, stage


@dataclass
class Stats:
    """What the workers found, shared by all of them (one event loop, no locks needed)."""

    latencies: list[float] = field(default_factory=list)
    raw_bytes: int = 0
    connections: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    queued: list[tuple[str, float]] = field(default_factory=list)
    last_reply_wall: float = 0.0
    late: list[float] = field(default_factory=list)  # --rate: seconds each started past its slot

    def error(self, key: str, detail: str) -> None:
        self.errors[key] += 1
        if len(self.samples) < 10:
            self.samples.append(f"{key}: {detail}"[:300])


@dataclass
class Plan:
    """Everything the workers share: payloads, bounds and the next message to send."""

    host: str
    port: int
    bodies: list[bytes]  # dot-stuffed wire payloads, each ending in ".\r\n"
    body_sizes: list[int]  # raw (unstuffed) sizes
    headers: list[bytes]
    deadline: float
    next_index: int = 0
    rate: float = 0.0  # open loop: message i is due at t0 + i / rate (0: as fast as replies)
    t0: float = 0.0

    def claim(self) -> int | None:
        if self.next_index >= len(self.headers) or time.perf_counter() >= self.deadline:
            return None
        i = self.next_index
        self.next_index += 1
        return i


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (possibly multi-line) SMTP reply: its code and last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionResetError("server closed the connection")
        if len(line) < 4 or line[3:4] != b"-":
            break
    try:
        return int(line[:3]), line.rstrip()
    except ValueError:
        return 0, line.rstrip()


async def expect(reader: asyncio.StreamReader, code: int, stage: str) -> bytes:
    got, line = await read_reply(reader)
    if got != code:
        raise ReplyError(got, line, stage)
    return line


MAIL = f"MAIL FROM:<{SENDER}>\r\n".encode()
RCPT = f"RCPT TO:<{RECIPIENT}>\r\n".encode()
DATA = b"DATA\r\n"


async def send_one(plan: Plan, stats: Stats, i: int, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
    """One transaction on an open connection; raises ReplyError on an unexpected reply."""
    b = i % len(plan.bodies)
    if plan.rate:
        due = plan.t0 + i / plan.rate - time.perf_counter()
        if due > 0:
            await asyncio.sleep(due)
        stats.late.append(max(0.0, -due))
    t0 = time.perf_counter()
    writer.write(MAIL)
    await expect(reader, 250, "MAIL")
    writer.write(RCPT)
    await expect(reader, 250, "RCPT")
    writer.write(DATA)
    await expect(reader, 354, "DATA")
    writer.writelines((plan.headers[i], plan.bodies[b]))
    await writer.drain()
    line = await expect(reader, 250, "end of DATA")
    stats.latencies.append(time.perf_counter() - t0)
    now = time.time()
    stats.last_reply_wall = now
    stats.raw_bytes += len(plan.headers[i]) + plan.body_sizes[b]
    marker = line.find(b"queued as ")
    if marker >= 0:
        stats.queued.append((line[marker + 10:].strip().decode("ascii", "replace"), now))


async def worker(plan: Plan, stats: Stats) -> None:
    """Send claimed messages over one reused connection; reconnect only when it breaks."""
    i = plan.claim()
    while i is not None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(plan.host, plan.port, limit=1 << 16)
            stats.connections += 1
            await expect(reader, 220, "banner")
            writer.write(b"EHLO loadgen.bench.test\r\n")
            await expect(reader, 250, "EHLO")
            while i is not None:
                try:
                    await send_one(plan, stats, i, reader, writer)
                except ReplyError as e:
                    stats.error(str(e.code), f"{e.stage} {e.line!r}")
                    if e.code == 421 or e.stage in ("banner", "EHLO"):
                        raise
                    if e.stage != "end of DATA":  # the transaction is still open: reset it
                        writer.write(b"RSET\r\n")
                        await expect(reader, 250, "RSET")
                i = plan.claim()
            writer.write(b"QUIT\r\n")
            with contextlib.suppress(OSError):  # a server may close without answering QUIT
                await read_reply(reader)
        except ReplyError as e:
            if e.stage in ("banner", "EHLO", "RSET"):
                stats.error(str(e.code), f"{e.stage} {e.line!r}")
            i = plan.claim()
            await asyncio.sleep(0.05)
        except OSError as e:  # connection refused or reset: that message failed, carry on
            stats.error(f"conn:{type(e).__name__}", str(e))
            i = plan.claim()
            await asyncio.sleep(0.05)
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


async def run_load(plan: Plan, stats: Stats, concurrency: int, grace: float) -> int:
    """Run the workers; returns how many were cancelled at the hard stop."""
    tasks = [asyncio.create_task(worker(plan, stats)) for _ in range(concurrency)]
    hard_stop = max(0.0, plan.deadline - time.perf_counter()) + grace
    _, pending = await asyncio.wait(tasks, timeout=hard_stop)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        stats.error("cancelled", f"{len(pending)} workers still busy {grace:.0f}s after the bound")
    return len(pending)


def build_plan(args: argparse.Namespace) -> tuple[list[bytes], list[int], list[bytes]]:
    raws = [build_body(j, args.attachments, args.size) for j in range(args.pool)]
    headers = seq_headers(args.n, args.nonce)
    return [dot_stuff(r) for r in raws], [len(r) for r in raws], headers


def measure(args: argparse.Namespace) -> dict[str, Any]:
    t_build = time.perf_counter()
    bodies, sizes, headers = build_plan(args)
    build_s = time.perf_counter() - t_build
    if args.wait_go:  # tell the runner we are built, and start when it says so
        print("READY", flush=True)
        sys.stdin.readline()

    stats = Stats()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start_wall = time.time()
    t0 = time.perf_counter()
    plan = Plan(args.host, args.port, bodies, sizes, headers, t0 + args.max_seconds,
                rate=args.rate, t0=t0)

    async def main() -> int:
        return await run_load(plan, stats, args.concurrency, args.grace)

    if args.uvloop:
        import uvloop
        cancelled = uvloop.run(main())
    else:
        cancelled = asyncio.run(main())
    elapsed = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
    lat = sorted(stats.latencies)
    ok = len(lat)

    def ms(v: float | None) -> float | None:
        return None if v is None else v * 1e3

    result: dict[str, Any] = {
        "host": args.host, "port": args.port, "loop": "uvloop" if args.uvloop else "asyncio",
        "concurrency": args.concurrency, "attachments": args.attachments,
        "attachment_size": args.size, "message_bytes": sizes[0] + len(headers[0]),
        "pool": len(bodies), "requested": args.n, "max_seconds": args.max_seconds,
        "attempted": plan.next_index, "ok": ok, "errors": sum(stats.errors.values()),
        "errors_by_code": dict(stats.errors), "error_samples": stats.samples,
        "cancelled_workers": cancelled, "connections": stats.connections,
        "elapsed_s": elapsed, "msgs_per_s": ok / elapsed if elapsed else 0.0,
        "mb_per_s": stats.raw_bytes / elapsed / MB if elapsed else 0.0,
        "p50_ms": ms(percentile(lat, 50)), "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(lat[-1] if lat else None),
        "client_cpu_s": cpu, "client_cpu_pct": 100 * cpu / elapsed if elapsed else 0.0,
        "build_s": build_s, "t_start_wall": t_start_wall, "t_end_wall": time.time(),
        "t_last_250_wall": stats.last_reply_wall or None, "queued_count": len(stats.queued),
        "rate": args.rate or None,
        "late_p50_ms": ms(percentile(sorted(stats.late), 50)) if stats.late else None,
        "late_p99_ms": ms(percentile(sorted(stats.late), 99)) if stats.late else None,
    }
    if args.ids_out:
        with open(args.ids_out, "w") as fh:
            fh.writelines(f"{mid}\t{wall:.6f}\n" for mid, wall in stats.queued)
        result["ids_file"] = args.ids_out
    else:
        result["queued_ids"] = [mid for mid, _ in stats.queued]
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--workload", choices=sorted(WORKLOADS),
                    help="sets -k, -s, --pool and the default -n")
    ap.add_argument("-n", type=int, default=0, help="at most this many messages")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="open loop: offer this many msgs/s (0: each worker sends on its reply)")
    ap.add_argument("-k", "--attachments", type=int, default=1)
    ap.add_argument("-s", "--size", type=int, default=20_000, help="random bytes per attachment")
    ap.add_argument("--pool", type=int, default=0, help="distinct bodies (default: workload's)")
    ap.add_argument("--pool-mb", type=int, default=512, help="memory budget for the pool")
    ap.add_argument("--max-seconds", type=float, default=8.0,
                    help="stop starting messages after this many seconds")
    ap.add_argument("--grace", type=float, default=120.0,
                    help="seconds in-flight messages get after the bound before cancellation")
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop")
    ap.add_argument("--nonce", default="", help="prefix of X-Bench-Seq (default: random)")
    ap.add_argument("--ids-out", help="write 'id<TAB>wall time of the 250' lines here")
    ap.add_argument("--wait-go", action="store_true",
                    help="print READY once built and wait for a line on stdin before starting")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = ap.parse_args(argv)
    if args.workload:
        w = WORKLOADS[args.workload]
        args.attachments, args.size = w.attachments, w.attachment_size
        args.n = args.n or w.max_messages
        args.pool = args.pool or w.pool
    args.n = args.n or 1000
    args.pool = pool_size(args.pool or max(4, args.concurrency), args.n, args.attachments,
                          args.size, args.pool_mb)
    args.nonce = args.nonce or os.urandom(4).hex()
    if not 0 < args.max_seconds <= 900 or args.concurrency < 1 or args.n < 1:
        ap.error("need -n ≥ 1, -c ≥ 1 and 0 < --max-seconds ≤ 900")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require_loopback(args.host)
    res = measure(args)
    if args.json:
        print(json.dumps(res), flush=True)
        return
    print(f"{res['ok']} messages ok, {res['errors']} errors {res['errors_by_code']} in "
          f"{res['elapsed_s']:.2f} s over {res['connections']} connections (c={args.concurrency}, "
          f"{res['message_bytes']} B each)")
    p50, p99 = res["p50_ms"], res["p99_ms"]
    print(f"  {res['msgs_per_s']:.1f} msgs/s  {res['mb_per_s']:.1f} MB/s  "
          f"p50 {p50 or float('nan'):.2f} ms  p99 {p99 or float('nan'):.2f} ms  "
          f"generator CPU {res['client_cpu_pct']:.0f}%")
    for s in res["error_samples"][:3]:
        print(f"  error: {s}")


if __name__ == "__main__":
    main()
