"""Bounded HTTP/1.1 keep-alive load generator for postroom's download-URL endpoint.

C workers each keep one connection open and send `POST /v1/messages/{id}/attachments/0/download`
(body `{"expires_in": 60}`, the agent's bearer key) for message ids taken round-robin from a
file, as fast as the answers come. A raw asyncio client (request bytes pre-built, responses
framed by Content-Length) keeps the client's CPU small on a 2-core machine. Reports requests/s,
p50/p99 latency and answers by status code. Loopback only; bounded by `--max-seconds` and `-n`.

    python -m bench.http_load --port 8025 --key pr_... --ids-file ids.txt -c 16 --max-seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.smtp_load import percentile, require_loopback

BODY = b'{"expires_in": 60}'


def build_requests(host: str, port: int, key: str, ids: list[str], path: str,
                   method: str = "POST") -> list[bytes]:
    out = []
    for mid in ids:
        head = (f"{method} {path.format(id=mid)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {key}\r\n")
        if method == "POST":
            out.append(f"{head}Content-Type: application/json\r\n"
                       f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
        else:
            out.append(f"{head}\r\n".encode())
    return out


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    connections: int = 0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    keep = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"connection" and value.strip().lower() == b"close":
            keep = False
        elif lname == b"transfer-encoding":
            raise ValueError("chunked responses are not supported by this client")
    body = await reader.readexactly(length) if length else b""
    return status, body, keep


async def worker(host: str, port: int, requests: list[bytes], offset: int, deadline: float,
                 budget: list[int], stats: Stats) -> None:
    i = offset
    while time.perf_counter() < deadline and budget[0] > 0:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            stats.connections += 1
            keep = True
            while keep and time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                t0 = time.perf_counter()
                writer.write(requests[i % len(requests)])
                status, body, keep = await read_response(reader)
                stats.latencies.append(time.perf_counter() - t0)
                stats.statuses[str(status)] += 1
                if status != 200 and len(stats.samples) < 5:
                    stats.samples.append(f"{status}: {body[:200]!r}")
                i += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            stats.statuses[f"conn:{type(e).__name__}"] += 1
            await asyncio.sleep(0.05)
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with open(args.ids_file) as fh:
        ids = [line.split("\t")[0].strip() for line in fh if line.strip()]
    if not ids:
        sys.exit("http_load: no message ids")
    requests = build_requests(args.host, args.port, args.key, ids, args.path, args.method)
    stats = Stats()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    deadline = t0 + args.max_seconds
    budget = [args.n]

    async def main() -> None:
        tasks = [asyncio.create_task(worker(args.host, args.port, requests,
                                            k * len(ids) // args.concurrency, deadline, budget,
                                            stats))
                 for k in range(args.concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=args.max_seconds + 30)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    if args.uvloop:
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    elapsed = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
    lat = sorted(stats.latencies)
    ok = stats.statuses.get("200", 0)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return {
        "concurrency": args.concurrency, "ids": len(ids), "requests": len(lat), "ok": ok,
        "statuses": dict(stats.statuses), "error_samples": stats.samples,
        "connections": stats.connections, "elapsed_s": elapsed,
        "req_per_s": ok / elapsed if elapsed else 0.0,
        "p50_ms": None if p50 is None else p50 * 1e3, "p99_ms": None if p99 is None else p99 * 1e3,
        "client_cpu_s": cpu, "client_cpu_pct": 100 * cpu / elapsed if elapsed else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8025)
    ap.add_argument("--key", required=True, help="the agent's API key")
    ap.add_argument("--ids-file", required=True, help="message ids, one per line (first column)")
    ap.add_argument("--path", default="/v1/messages/{id}/attachments/0/download",
                    help="request path; {id} is replaced by a message id")
    ap.add_argument("--method", choices=["POST", "GET"], default="POST",
                    help="POST sends the download body; GET sends none (e.g. /healthz)")
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("-n", type=int, default=1_000_000, help="at most this many requests")
    ap.add_argument("--max-seconds", type=float, default=8.0)
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    require_loopback(args.host)
    if not 0 < args.max_seconds <= 600:
        ap.error("--max-seconds must be in (0, 600]")
    res = measure(args)
    if args.json:
        print(json.dumps(res), flush=True)
    else:
        print(f"{res['req_per_s']:.0f} req/s  p50 {res['p50_ms']} ms  p99 {res['p99_ms']} ms  "
              f"statuses {res['statuses']}  client CPU {res['client_cpu_pct']:.0f}%")


if __name__ == "__main__":
    main()
