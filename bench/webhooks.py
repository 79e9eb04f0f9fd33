"""What webhooks cost and how fast they arrive (issue 21 item 6): a fresh postroom under the
small workload at c=16, with one endpoint that wants every event against none, alternating.

    .venv/bin/python -m bench.webhooks                         # 3 repeats a side, ~3 min
    .venv/bin/python -m bench.webhooks --repeats 1 --seconds 3 --out /tmp/wh.jsonl  # smoke

The endpoint is a keep-alive HTTP/1.1 receiver on loopback in this process (its own thread and
event loop) that answers 204 and notes when each POST arrived. Reported per run: SMTP msgs/s
(the ratio with ÷ without is what pushing costs acceptance), events delivered per second while
the load runs, the latency from each message's 250 (the load generator's clock) to the arrival
of its `message.received` (p50, p99), and whether every event of the feed arrived once the load
ended. Both sides run `[auth] enabled = false`: with it, `message.received` waits for the
sender's DNS answers, which is sender authentication's latency, measured by bench/sender_auth.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.run_smtp_bench import git_state, machine_info, postroom_source, read_ids
from bench.smtp_load import percentile
from bench.targets import (
    REPO,
    TreeSampler,
    append_record,
    cleanup,
    nice_prefix,
    start_postroom,
    steal_cpu_s,
    tool_versions,
    wait_quiet,
)

RESULTS = Path(__file__).resolve().parent / "results" / "webhooks.jsonl"
CONFIG = '\n[auth]\nenabled = false\n\n[webhooks]\nallow_private_networks = true\n'


@dataclass
class Arrivals:
    """What reached the receiver: (wall time, event type, message id, webhook-id)."""

    rows: list[tuple[float, str, str | None, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Receiver:
    """An asyncio HTTP/1.1 server in a thread: reads each POST, answers 204, keeps the
    connection."""

    def __init__(self) -> None:
        self.arrivals = Arrivals()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(line.split(": ", 1) for line in
                               head.decode("latin-1").lower().split("\r\n")[1:] if ": " in line)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                at = time.time()
                event = json.loads(body)
                with self.arrivals.lock:
                    self.arrivals.rows.append((at, event["type"], event["data"]["message_id"],
                                               headers.get("webhook-id", "")))
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def snapshot(self) -> list[tuple[float, str, str | None, str]]:
        with self.arrivals.lock:
            return list(self.arrivals.rows)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def feed_ids(http_url: str, key: str) -> set[str]:
    """Every event id of the bench agent's feed."""
    ids: set[str] = set()
    after = "0"
    with httpx.Client(base_url=http_url, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as api:
        while True:
            page = api.get("/v1/events", params={"after": after, "limit": 500}).json()
            ids.update(e["id"] for e in page["events"])
            after = page["next_cursor"]
            if not page["has_more"]:
                return ids


def one_run(hooked: bool, rep: int, position: int, src: Path, args: argparse.Namespace
            ) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="postroom-webhooks-"))
    run = start_postroom(root, args.nice, src, extra_config=CONFIG)
    receiver = Receiver()
    record: dict[str, Any] = {"kind": "webhooks_run", "webhook": hooked, "rep": rep,
                              "position": position}
    try:
        if hooked:
            made = httpx.post(f"{run.http_url}/v1/webhooks", json={"url": receiver.url},
                              headers={"Authorization": f"Bearer {run.api_key}"}, timeout=30)
            made.raise_for_status()
        ids_file = root / "ids.tsv"
        cmd = [*nice_prefix(args.nice), sys.executable, "-m", "bench.smtp_load", "--json",
               "--uvloop", "--port", str(run.smtp_port), "--workload", "small",
               "-c", str(args.concurrency), "--max-seconds", str(args.seconds),
               "--ids-out", str(ids_file), "--rate", str(args.rate)]
        record["quiet_waited_s"], _ = wait_quiet(args.quiet_wait, 15.0)
        sampler = TreeSampler(run.pid)
        cpu0, steal0, w0 = sampler.cpu_s(), steal_cpu_s(), time.monotonic()
        load_start = time.time()
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True).stdout
        load_end = time.time()
        res = json.loads(out.strip().splitlines()[-1])
        wall = time.monotonic() - w0
        record.update({k: res[k] for k in ("msgs_per_s", "ok", "errors", "p50_ms", "p99_ms",
                                           "elapsed_s")},
                      cpu_ms_load=1e3 * (sampler.cpu_s() - cpu0) / max(res["ok"], 1),
                      steal_pct=100 * (steal_cpu_s() - steal0) / wall)
        if hooked:
            queued = dict(read_ids(ids_file))
            expected = feed_ids(run.http_url, run.api_key)
            deadline = time.monotonic() + args.drain
            while {r[3] for r in receiver.snapshot()} < expected and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
                expected = feed_ids(run.http_url, run.api_key)
            rows = receiver.snapshot()
            during = [r for r in rows if load_start <= r[0] <= load_end]
            latency = [1e3 * (at - queued[mid]) for at, kind, mid, _ in rows
                       if kind == "message.received" and mid in queued]
            got = {r[3] for r in rows}
            record.update(
                events=len(expected), arrived=len(got & expected),
                duplicates=len(rows) - len(got), missing=len(expected - got),
                events_per_s_load=len(during) / max(load_end - load_start, 1e-9),
                drained_s=(max(r[0] for r in rows) - load_end) if rows else None,
                received_latency_p50_ms=percentile(sorted(latency), 50),
                received_latency_p99_ms=percentile(sorted(latency), 99), latency_n=len(latency))
    finally:
        receiver.stop()
        record["exit_code"] = run.stop()
        if record.get("errors") or record["exit_code"] not in (0, -15, None):
            record["log_tail"] = run.log_tail(20)
        cleanup(run)
    return record


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    on = [r for r in runs if r["webhook"]]
    off = [r for r in runs if not r["webhook"]]
    pairs = [(a, b) for a in on for b in off if a["rep"] == b["rep"]]

    def med(rows: list[dict[str, Any]], key: str) -> dict[str, float] | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return spread(values) if values else None

    return {"with": {k: med(on, k) for k in (
                "msgs_per_s", "cpu_ms_load", "events_per_s_load", "received_latency_p50_ms",
                "received_latency_p99_ms", "drained_s", "missing", "duplicates")},
            "without": {k: med(off, k) for k in ("msgs_per_s", "cpu_ms_load")},
            "msgs_ratio_with_without": spread([a["msgs_per_s"] / b["msgs_per_s"]
                                               for a, b in pairs]) if pairs else None,
            "cpu_ms_diff": spread([a["cpu_ms_load"] - b["cpu_ms_load"]
                                   for a, b in pairs]) if pairs else None}


def fmt(v: dict[str, float] | None, digits: int = 1) -> str:
    if v is None:
        return "–"
    return f"{v['median']:.{digits}f} ({v['min']:.{digits}f}–{v['max']:.{digits}f})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("-c", "--concurrency", type=int, default=16)
    p.add_argument("--rate", type=float, default=0.0,
                   help="offer this many msgs/s (open loop); 0 saturates (closed loop)")
    p.add_argument("--drain", type=float, default=60.0,
                   help="seconds to wait after the load for every event to arrive")
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--nice", type=int, default=-10)
    p.add_argument("--postroom-src", default="head")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    record: dict[str, Any] = {
        "kind": "webhooks", "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join([".venv/bin/python -m bench.webhooks", *(argv or sys.argv[1:])]),
        "git": git_state(), "machine": machine_info(), "versions": tool_versions()}
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        src, source, commit = postroom_source(args.postroom_src, Path(tmp) / "src")
        record.update(postroom_source=source, commit=commit)
        runs: list[dict[str, Any]] = []
        for rep in range(args.repeats):
            for position, hooked in enumerate((True, False) if rep % 2 == 0 else (False, True)):
                r = one_run(hooked, rep, position, src, args)
                runs.append(r)
                extra = (f"  {r['events_per_s_load']:.0f} events/s  250→message.received "
                         f"p50/p99 {r['received_latency_p50_ms'] or 0:.1f}/"
                         f"{r['received_latency_p99_ms'] or 0:.1f} ms  missing {r['missing']}"
                         f"  duplicates {r['duplicates']}  drained in {r['drained_s'] or 0:.1f} s"
                         if hooked else "")
                print(f"rep {rep} webhook {'on ' if hooked else 'off'} {r['msgs_per_s']:7.1f} "
                      f"msgs/s  {r['cpu_ms_load']:.2f} CPU ms/msg  steal {r['steal_pct']:.0f}%"
                      + extra, flush=True)
    s = summary(runs)
    record.update(concurrency=args.concurrency, rate=args.rate or None, seconds=args.seconds,
                  summary=s, runs=runs, finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    w = s["with"]
    print(f"\nsmall c={args.concurrency}, median (min–max) of {args.repeats} runs a side")
    print(f"msgs/s with a webhook {fmt(w['msgs_per_s'])}, without {fmt(s['without']['msgs_per_s'])}"
          f"; ratio {fmt(s['msgs_ratio_with_without'], 3)}")
    print(f"events delivered/s during the load {fmt(w['events_per_s_load'])}; 250→webhook "
          f"(message.received) p50 {fmt(w['received_latency_p50_ms'])} ms, p99 "
          f"{fmt(w['received_latency_p99_ms'])} ms; CPU ms/msg with − without "
          f"{fmt(s['cpu_ms_diff'], 2)}")
    append_record(args.out, record)
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
