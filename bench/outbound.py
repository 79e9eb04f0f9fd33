"""Sending throughput (issue 18): `POST /v1/messages` at c=16, through local delivery and through
a relay (smtp-sink), against inbound acceptance of the same small mail measured in the same run.

    .venv/bin/python -m bench.outbound --seconds 6 --repeats 3

Per repeat and path: the rate of 202s while the load runs, and the rate of messages finished
(`sent`, every recipient delivered or accepted by the relay) counted until the last one is; then
small-mail SMTP at c=16 on a fresh postroom, the peer the ratios are taken against. Loopback only,
bounded in time and count; every postroom and sink is fresh and removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import targets

TEXT = "An agent's answer, a few lines long.\n" * 40  # ≈ 1.4 kB of text, like a short reply


async def _send_load(url: str, key: str, body: dict[str, Any], concurrency: int,
                     seconds: float) -> tuple[list[str], float]:
    """Send for `seconds` from `concurrency` clients; (ids answered 202, elapsed)."""
    ids: list[str] = []
    started = time.monotonic()
    stop = started + seconds

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                     timeout=30) as http:
            while time.monotonic() < stop:
                r = await http.post("/v1/messages", json=body)
                if r.status_code == 202:
                    ids.append(r.json()["id"])

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return ids, time.monotonic() - started


async def _finished(url: str, key: str, ids: list[str], started: float, within: float) -> float:
    """Seconds from `started` until every message in `ids` is `sent`, read from the agent's
    message list a page of 200 at a time (so the poll costs postroom little)."""
    pending = set(ids)
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=30) as http:
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} messages not sent after {within} s")
            after = None
            while True:
                page = (await http.get("/v1/messages", params={"limit": 200, **(
                    {"after": after} if after else {})})).json()
                pending -= {m["id"] for m in page["messages"] if m["status"] == "sent"}
                after = page["next_cursor"]
                if not page["has_more"]:
                    break
            if pending:
                await asyncio.sleep(0.2)
    return time.monotonic() - started


def send_run(path: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """One repeat of `path` ("local" or "relay") on a fresh postroom."""
    sink = targets.start_target("smtp-sink", 0, targets.REPO) if path == "relay" else None
    extra = ("\n[outbound]\nrate_per_agent = 100000000\npoll_interval = \"0.2s\"\n"
             + (f'relay = "smtp://{targets.HOST}:{sink.smtp_port}"\n' if sink else ""))
    root = Path(tempfile.mkdtemp(prefix="bench-outbound-"))
    run = targets.start_postroom(root, 0, targets.REPO, extra_config=extra)
    try:
        to = f"peer@{targets.BENCH_DOMAIN}" if path == "local" else "peer@elsewhere.test"
        body = {"from": f"agent@{targets.BENCH_DOMAIN}", "to": [to], "subject": "bench",
                "text": TEXT}
        sampler = targets.TreeSampler(run.pid)
        cpu0 = sampler.cpu_s()
        t0 = time.monotonic()
        ids, elapsed = asyncio.run(_send_load(run.http_url, run.api_key, body, concurrency,
                                              seconds))
        done = asyncio.run(_finished(run.http_url, run.api_key, ids, t0, 120))
        cpu = sampler.cpu_s() - cpu0
        return {"path": path, "c": concurrency, "sent": len(ids),
                "accepted_per_s": len(ids) / elapsed, "finished_per_s": len(ids) / done,
                "cpu_ms_per_msg": 1000 * cpu / max(len(ids), 1)}
    finally:
        run.stop()
        targets.cleanup(run)
        if sink is not None:
            sink.stop()
            targets.cleanup(sink)


def inbound_run(concurrency: int, seconds: float) -> float:
    """Small mail at `concurrency` over SMTP into a fresh postroom: msgs/s accepted."""
    run = targets.start_target("postroom", 0, targets.REPO)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.smtp_load", "--uvloop", "--port", str(run.smtp_port),
             "--workload", "small", "-c", str(concurrency), "--max-seconds", str(seconds),
             "--json"], capture_output=True, text=True, cwd=targets.REPO, check=True).stdout
        return float(json.loads(out.strip().splitlines()[-1])["msgs_per_s"])
    finally:
        run.stop()
        targets.cleanup(run)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--concurrency", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args(argv)
    rows: dict[str, list[dict[str, Any]]] = {"local": [], "relay": []}
    inbound: list[float] = []
    for rep in range(args.repeats):
        for path in ("local", "relay") if rep % 2 == 0 else ("relay", "local"):
            rec = send_run(path, args.concurrency, args.seconds)
            rows[path].append(rec)
            print(json.dumps(rec), flush=True)
        inbound.append(inbound_run(args.concurrency, args.seconds))
        print(json.dumps({"path": "inbound smtp", "msgs_per_s": inbound[-1]}), flush=True)
    peer = statistics.median(inbound)
    print(f"inbound small c={args.concurrency}: {peer:.0f} msgs/s (median of {len(inbound)})")
    for path, recs in rows.items():
        acc = statistics.median(r["accepted_per_s"] for r in recs)
        fin = statistics.median(r["finished_per_s"] for r in recs)
        cpu = statistics.median(r["cpu_ms_per_msg"] for r in recs)
        print(f"{path}: {acc:.0f} sends/s answered 202 ({acc / peer:.2f}× inbound), "
              f"{fin:.0f}/s finished ({fin / peer:.2f}×), {cpu:.1f} CPU ms per message")


if __name__ == "__main__":
    main()
