"""Run postroom's SMTP benchmark: postroom vs Postfix smtp-sink vs an aiosmtpd null sink.

For every workload × concurrency point and every repeat, each target is started fresh in a temp
dir (targets.py), driven by the same generator (smtp_load.py, a subprocess on uvloop) and
stopped by its own process group; the order of the targets rotates from repeat to repeat. Each
run waits for the machine to be idle-ish first, samples the target's process-tree RSS every
0.1 s and accounts CPU of target, generator and everything else ("bg", other work on this
shared machine). A run disturbed by more than `--bg-limit` % of a core of foreign CPU is run
again once (the first record is kept, marked superseded) unless the machine had not become
quiet before it either.

For postroom it also measures time to ready: after the load, every queued id is polled with
`GET /v1/messages/{id}` until its status is terminal (ready/partial/failed). Then, separately,
`POST /v1/messages/{id}/attachments/0/download` requests/s at c=16 (http_load.py), and a py-spy
profile of postroom during a small c=16 run. Records go to results/*.jsonl; report.py turns
them into bench/README.md.

    .venv/bin/python -m bench.run_smtp_bench            # full run, 25-35 min (2 cores, noisy)
    .venv/bin/python -m bench.run_smtp_bench --quick    # 1 repeat of 3 s, ~5 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psutil

from bench import report
from bench.smtp_load import WORKLOADS, percentile
from bench.targets import (
    REPO,
    TARGETS,
    Running,
    TreeSampler,
    busy_cpu_s,
    cleanup,
    nice_prefix,
    own_cpu_s,
    start_target,
    steal_cpu_s,
    tool_versions,
    wait_quiet,
    wait_tree_quiet,
)

BENCH = Path(__file__).resolve().parent
# postroom and the two peers of issue 24: the best durable receiver (Postfix with its queue)
# and the no-storage ceiling (smtp-sink). aiosmtpd's null sink on request.
DEFAULT_TARGETS = ("postroom", "postfix-queue", "smtp-sink")
TERMINAL = ("ready", "partial", "failed")


@dataclass
class Options:
    targets: list[str]
    workloads: list[str]
    concurrency: list[int]
    repeats: int
    seconds: float
    grace: float
    quiet_wait: float
    quiet_pct: float
    bg_limit: float
    ready_timeout: float
    download_seconds: float
    download_repeats: int
    profile_seconds: float
    nice: int
    out: Path
    readme: Path
    src: Path
    quick: bool


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- postroom source

def export_commit(rev: str, dest: Path) -> str:
    """Extract the tree of `rev` into `dest` with `git archive` (read-only); returns the commit."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                         capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(dest, filter="data")
    return commit


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty_files": [line[3:] for line in git("status", "--porcelain").splitlines()]}


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    osname = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip('"')
    return {"cpu": cpu, "cores": psutil.cpu_count(),
            "ram_gib": psutil.virtual_memory().total / 2**30, "kernel": platform.release(),
            "os": osname, "loadavg_at_start": os.getloadavg()}


# --------------------------------------------------------------------------- one SMTP run

def start_generator(run: Running, workload: str, c: int, seconds: float, grace: float,
                    nice: int, ids_out: Path, extra: tuple[str, ...] = ()
                    ) -> subprocess.Popen[str]:
    cmd = [*nice_prefix(nice), sys.executable, "-m", "bench.smtp_load", "--json", "--uvloop",
           "--port", str(run.smtp_port), "--workload", workload, "-c", str(c),
           "--max-seconds", str(seconds), "--grace", str(grace), "--wait-go",
           "--ids-out", str(ids_out), *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_line(stream: IO[str], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def drive(run: Running, workload: str, c: int, opts: Options, ids_out: Path,
          keep_sampling: bool = False, before_go: Any = None,
          extra: tuple[str, ...] = ()) -> tuple[dict[str, Any], TreeSampler]:
    """Build the generator's messages, wait for quiet, run the load and account CPU/RSS.
    With `keep_sampling` the RSS sampler is returned still running (postroom's drain)."""
    gen = start_generator(run, workload, c, opts.seconds, opts.grace, opts.nice, ids_out, extra)
    assert gen.stdin is not None and gen.stdout is not None
    if wait_line(gen.stdout, 300).strip() != "READY":
        gen.kill()
        _, err = gen.communicate()
        raise RuntimeError(f"generator did not get ready: {err[-2000:]}")
    waited, last_pct = wait_quiet(opts.quiet_wait, opts.quiet_pct)
    if before_go is not None:
        before_go()
    sampler = TreeSampler(run.pid)
    idle_rss = sampler.rss()
    cpu0, busy0, me0, steal0 = sampler.cpu_s(), busy_cpu_s(), own_cpu_s(), steal_cpu_s()
    w0 = time.perf_counter()
    sampler.start()
    gen.stdin.write("go\n")
    gen.stdin.flush()
    out, err = gen.communicate(timeout=opts.seconds + opts.grace + 120)
    wall = time.perf_counter() - w0
    target_cpu = sampler.cpu_s() - cpu0
    busy, me, steal = busy_cpu_s() - busy0, own_cpu_s() - me0, steal_cpu_s() - steal0
    peak_load = sampler.peak_rss
    if not keep_sampling:
        peak_load = sampler.stop()
    if gen.returncode != 0 or not out.strip():
        raise RuntimeError(f"generator failed ({gen.returncode}): {err[-2000:]}")
    res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    elapsed = res["elapsed_s"] or wall
    res.update(
        target=run.name, workload=workload, idle_rss=idle_rss, peak_rss_load=peak_load,
        peak_rss=peak_load, target_cpu_s=target_cpu, target_cpu_pct=100 * target_cpu / elapsed,
        cpu_start_s=cpu0,
        bg_cpu_pct=100 * max(0.0, busy - target_cpu - res["client_cpu_s"] - me) / wall,
        steal_pct=100 * steal / wall, quiet_waited_s=waited, quiet_last_pct=last_pct, span_s=wall)
    return res, sampler


# --------------------------------------------------------------------------- time to ready

def epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def poll_terminal(url: str, key: str, queued: list[tuple[str, float]], limit_s: float,
                        workers: int = 4) -> dict[str, Any]:
    """GET every queued message until it is terminal.

    Polling costs postroom CPU (each GET is a few database round trips), so while extraction is
    still running only the newest queued message is polled (one GET per 50 ms; the job queue is
    FIFO, so it is about the last to finish). Once it is terminal every id is fetched,
    `workers` at a time, oldest first, re-polling any that is not terminal yet. The time to
    ready itself comes from the server's `processed_at`, not from when the poller noticed."""
    import httpx
    found: dict[str, dict[str, Any]] = {}
    problems: Counter[str] = Counter()
    deadline = time.monotonic() + limit_s
    cursor = 0
    polls = 0
    last_seen = 0.0

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=30, limits=httpx.Limits(max_connections=workers)) as cl:
        async def until_terminal(mid: str, t250: float, pause: float) -> None:
            nonlocal polls
            while time.monotonic() < deadline:
                polls += 1
                try:
                    r = await cl.get(f"/v1/messages/{mid}")
                except httpx.HTTPError as e:
                    problems[f"http:{type(e).__name__}"] += 1
                    await asyncio.sleep(0.1)
                    continue
                if r.status_code == 200:
                    body = r.json()
                    if body["status"] in TERMINAL:
                        ready = [epoch(a.get("ready_at")) for a in body["attachments"]]
                        found[mid] = {
                            "status": body["status"], "t250": t250,
                            "received": epoch(body.get("received_at")),
                            "processed": epoch(body.get("processed_at")),
                            "ready": max((t for t in ready if t), default=None),
                            "attachments": Counter(a["status"] for a in body["attachments"]),
                            "error": body.get("error")}
                        return
                else:
                    problems[str(r.status_code)] += 1
                await asyncio.sleep(pause)

        async def sweeper() -> None:
            nonlocal cursor
            while cursor < len(queued) and time.monotonic() < deadline:
                mid, t250 = queued[cursor]
                cursor += 1
                if mid not in found:
                    await until_terminal(mid, t250, 0.02)

        if queued:
            await until_terminal(*queued[-1], 0.05)
            last_seen = time.time()
            await asyncio.gather(*(sweeper() for _ in range(workers)))
    detected = time.time()
    statuses: Counter[str] = Counter(v["status"] for v in found.values())
    attachments: Counter[str] = Counter()
    for v in found.values():
        attachments.update(v["attachments"])
    processed = [v["processed"] for v in found.values() if v["processed"]]
    ready_lat = sorted(((v["ready"] or v["processed"]) - v["t250"]) * 1e3
                       for v in found.values() if v["ready"] or v["processed"])
    work = sorted((v["processed"] - v["received"]) * 1e3 for v in found.values()
                  if v["processed"] and v["received"])
    return {
        "queued": len(queued), "terminal": len(found), "never_terminal": len(queued) - len(found),
        "statuses": dict(statuses), "attachment_statuses": dict(attachments),
        "errors": sorted({v["error"] for v in found.values() if v["error"]})[:5],
        "poll_problems": dict(problems), "polls": polls,
        "last_processed_wall": max(processed) if processed else None, "detected_wall": detected,
        "newest_terminal_seen_wall": last_seen or None,
        "ready_after_250_p50_ms": percentile(ready_lat, 50),
        "ready_after_250_p99_ms": percentile(ready_lat, 99),
        "received_to_processed_p50_ms": percentile(work, 50),
        "received_to_processed_p99_ms": percentile(work, 99),
    }


def read_ids(path: Path) -> list[tuple[str, float]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            mid, _, wall = line.partition("\t")
            if mid:
                out.append((mid, float(wall)))
    return out


def time_to_ready(run: Running, res: dict[str, Any], ids_file: Path, timeout: float
                  ) -> dict[str, Any]:
    queued = read_ids(ids_file)
    ready = asyncio.run(poll_terminal(run.http_url, run.api_key, queued, timeout))
    end = res.get("t_last_250_wall") or res["t_end_wall"]
    if ready["never_terminal"] == 0 and ready["last_processed_wall"]:
        ready["time_to_ready_s"] = max(0.0, ready["last_processed_wall"] - end)
        seen = ready["newest_terminal_seen_wall"] or ready["detected_wall"]
        ready["time_to_ready_poll_s"] = seen - end
    else:
        ready["time_to_ready_s"] = None
        ready["time_to_ready_poll_s"] = None
    return ready


# --------------------------------------------------------------------------- the matrix

def one_run(name: str, workload: str, c: int, rep: int, position: int, opts: Options
            ) -> dict[str, Any]:
    t_start = time.perf_counter()
    run = start_target(name, opts.nice, opts.src)
    started_s = time.perf_counter() - t_start
    record: dict[str, Any] = {"kind": "smtp", "target": name, "workload": workload,
                              "concurrency": c, "rep": rep, "position": position,
                              "start_s": started_s, "pid": run.pid}
    try:
        ids_file = run.root / "ids.tsv"
        res, sampler = drive(run, workload, c, opts, ids_file, keep_sampling=True)
        record.update(res)
        try:
            # The whole job's CPU: until the tree is quiet after the load (postroom's
            # extraction, Postfix's delivery to discard), before any polling adds its own.
            record["drain_s"] = wait_tree_quiet(sampler, 30.0)
            record["target_cpu_s_drained"] = sampler.cpu_s() - res["cpu_start_s"]
            if name == "postroom":
                record["ready"] = time_to_ready(run, res, ids_file, opts.ready_timeout)
        finally:
            record["peak_rss"] = max(res["peak_rss_load"], sampler.stop())
    finally:
        record["exit_code"] = run.stop()
        problems = (record.get("errors") or record.get("exit_code") not in (0, -15, None)
                    or (record.get("ready") or {}).get("never_terminal"))
        if problems:
            record["log_tail"] = run.log_tail(20)
        cleanup(run)
    return record


def fmt(r: dict[str, Any]) -> str:
    ready = r.get("ready") or {}
    ttr = ready.get("time_to_ready_s")
    extra = f" ready={ttr:.2f}s" if ttr is not None else (
        f" NOT-READY={ready.get('never_terminal')}" if ready else "")
    return (f"{r['target']:9s} {r['workload']:6s} c={r['concurrency']:<2d} rep={r['rep']} "
            f"{r['msgs_per_s']:8.1f} msg/s {r['mb_per_s']:6.1f} MB/s "
            f"p50={r['p50_ms'] or 0:.1f}ms p99={r['p99_ms'] or 0:.1f}ms err={r['errors']} "
            f"rss={r['peak_rss'] / 2**20:.0f}MiB cpu={r['target_cpu_pct']:.0f}% "
            f"gen={r['client_cpu_pct']:.0f}% bg={r['bg_cpu_pct']:.0f}% "
            f"cpu/msg={report.cpu_ms_per_msg(r) or 0:.2f}ms{extra}")



def smtp_matrix(opts: Options, out: IO[str]) -> None:
    for workload in opts.workloads:
        for c in opts.concurrency:
            for rep in range(opts.repeats):
                k = rep % len(opts.targets)
                order = opts.targets[k:] + opts.targets[:k]
                for position, name in enumerate(order):
                    for attempt in range(2):
                        try:
                            rec = one_run(name, workload, c, rep, position, opts)
                        except Exception as e:  # record the failure, keep the matrix going
                            rec = {"kind": "smtp", "target": name, "workload": workload,
                                   "concurrency": c, "rep": rep, "failed": repr(e)[:2000]}
                            log(f"{name} {workload} c={c} rep={rep} FAILED: {e!r}"[:400])
                            out.write(json.dumps(rec) + "\n")
                            out.flush()
                            break
                        rec["attempt"] = attempt
                        # Run again once when foreign CPU disturbed the run, unless the machine
                        # never got quiet before it either (then a re-run is no cleaner).
                        disturbed = rec["bg_cpu_pct"] > opts.bg_limit
                        never_quiet = rec["quiet_waited_s"] >= opts.quiet_wait - 0.5
                        rec["superseded"] = disturbed and not never_quiet and attempt == 0
                        out.write(json.dumps(rec) + "\n")
                        out.flush()
                        log(fmt(rec) + ("  [disturbed, again]" if rec["superseded"] else ""))
                        if not rec["superseded"]:
                            break


# --------------------------------------------------------------------------- downloads

DOWNLOAD_PATH = "/v1/messages/{id}/attachments/0/download"
# Other endpoints measured once each on the same instance, to place the download rate between
# the HTTP stack's own ceiling (/healthz touches no database) and the other database readers.
ENDPOINTS = [("GET /healthz (no database)", "GET", "/healthz"),
             ("GET /readyz (SELECT 1 + store check)", "GET", "/readyz"),
             ("GET /v1/messages/{id}", "GET", "/v1/messages/{id}"),
             ("GET /v1/messages/{id}/attachments/0", "GET", "/v1/messages/{id}/attachments/0")]


def http_cmd(run: Running, ids_file: Path, opts: Options, path: str, method: str) -> list[str]:
    return [*nice_prefix(opts.nice), sys.executable, "-m", "bench.http_load", "--json",
            "--uvloop", "--port", str(run.http_port), "--key", run.api_key,
            "--ids-file", str(ids_file), "-c", "16", "--max-seconds", str(opts.download_seconds),
            "--path", path, "--method", method]


def http_run(run: Running, ids_file: Path, opts: Options, path: str, method: str
             ) -> dict[str, Any]:
    """One http_load run at c=16 with postroom's CPU/RSS sampled and foreign CPU accounted."""
    waited, _ = wait_quiet(opts.quiet_wait, opts.quiet_pct)
    sampler = TreeSampler(run.pid)
    cpu0, busy0, me0 = sampler.cpu_s(), busy_cpu_s(), own_cpu_s()
    w0 = time.perf_counter()
    sampler.start()
    proc = subprocess.run(http_cmd(run, ids_file, opts, path, method), cwd=REPO,
                          capture_output=True, text=True, timeout=opts.download_seconds + 90)
    wall = time.perf_counter() - w0
    peak = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"http_load failed: {proc.stderr[-2000:]}")
    rec: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    target_cpu = sampler.cpu_s() - cpu0
    busy = busy_cpu_s() - busy0
    rec.update(target="postroom", path=path, method=method, peak_rss=peak,
               target_cpu_pct=100 * target_cpu / rec["elapsed_s"],
               bg_cpu_pct=100 * max(0.0, busy - target_cpu - rec["client_cpu_s"]
                                    - (own_cpu_s() - me0)) / wall,
               quiet_waited_s=waited)
    return rec


def download_bench(opts: Options, out: IO[str], profile: bool) -> None:
    import hashlib

    import httpx
    run = start_target("postroom", opts.nice, opts.src)
    try:
        seed_opts = Options(**{**opts.__dict__, "seconds": 60.0, "quiet_wait": 0.0})
        ids_file = run.root / "ids.tsv"
        res, _ = drive(run, "small", 4, seed_opts, ids_file, extra=("-n", "256"))
        ready = time_to_ready(run, res, ids_file, opts.ready_timeout)
        queued = read_ids(ids_file)
        log(f"download: seeded {len(queued)} messages, {ready['statuses']}")
        # One end-to-end check: the URL serves the very bytes whose sha256 the API states.
        with httpx.Client(base_url=run.http_url,
                          headers={"Authorization": f"Bearer {run.api_key}"}) as cl:
            info = cl.post(DOWNLOAD_PATH.format(id=queued[0][0]), json={"expires_in": 60}).json()
            body = httpx.get(info["url"]).content
            verified = hashlib.sha256(body).hexdigest() == info["sha256"]
        for rep in range(opts.download_repeats):
            rec = http_run(run, ids_file, opts, DOWNLOAD_PATH, "POST")
            rec.update(kind="download", rep=rep, url_verified=verified, seeded=len(queued))
            out.write(json.dumps(rec) + "\n")
            out.flush()
            log(f"download rep={rep}: {rec['req_per_s']:.0f} req/s p50={rec['p50_ms']:.1f}ms "
                f"p99={rec['p99_ms']:.1f}ms statuses={rec['statuses']} "
                f"cpu={rec['target_cpu_pct']:.0f}% client={rec['client_cpu_pct']:.0f}% "
                f"bg={rec['bg_cpu_pct']:.0f}%")
        for label, method, path in ENDPOINTS:
            rec = http_run(run, ids_file, opts, path, method)
            rec.update(kind="endpoint", endpoint=label, rep=0, seeded=len(queued))
            out.write(json.dumps(rec) + "\n")
            out.flush()
            log(f"endpoint {label}: {rec['req_per_s']:.0f} req/s p50={rec['p50_ms']:.1f}ms "
                f"statuses={rec['statuses']} cpu={rec['target_cpu_pct']:.0f}%")
        if profile:  # the same seeded instance, py-spy attached, for where a request's time goes
            summary: dict[str, Any] = {}
            for kind in ("flamegraph", "threads"):
                dest = opts.out / f"profile_download_c16.{'svg' if kind == 'flamegraph' else 'txt'}"
                spy = start_spy(run.pid, kind, dest, opts.download_seconds)
                proc = subprocess.run(http_cmd(run, ids_file, opts, DOWNLOAD_PATH, "POST"),
                                      cwd=REPO, capture_output=True, text=True,
                                      timeout=opts.download_seconds + 90)
                finish_spy(spy)
                rate = json.loads(proc.stdout.strip().splitlines()[-1])["req_per_s"]
                log(f"profile download c=16 ({kind}): {rate:.0f} req/s -> {dest.name}")
                if kind == "threads" and dest.exists():
                    summary["download_c16_threads"] = report.summarise_profile(dest)
                    summary["download_rate_under_profiler"] = rate
            summary_path = opts.out / "profile_summary.json"
            old = json.loads(summary_path.read_text()) if summary_path.exists() else {}
            old.update(summary)
            summary_path.write_text(json.dumps(old, indent=1))
    finally:
        run.stop()
        cleanup(run)


# --------------------------------------------------------------------------- profile

def py_spy() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()), None)


# name: (py-spy output format, extra flags, what it shows)
PROFILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "flamegraph": ("flamegraph", ("--nonblocking",)),
    "threads": ("raw", ("--nonblocking", "--threads")),
    "gil": ("raw", ("--nonblocking", "--threads", "--gil")),
    # --native cannot run non-blocking: py-spy pauses the process for every sample, which
    # slows postroom down a lot; read it for where threads wait, not for rates.
    "native": ("raw", ("--threads", "--native")),
}


def start_spy(pid: int, kind: str, dest: Path, seconds: float) -> subprocess.Popen[bytes]:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy not installed (pip install py-spy)")
    fmt_name, flags = PROFILES[kind]
    cmd = [exe, "record", "--pid", str(pid), "--rate", "100", "--format", fmt_name,
           "-o", str(dest), "--duration", str(int(seconds + 1)), *flags]
    spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.0)  # let it attach before the load starts
    return spy


def finish_spy(spy: subprocess.Popen[bytes] | None) -> str:
    if spy is None:
        return ""
    try:
        out, _ = spy.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        spy.terminate()
        out, _ = spy.communicate(timeout=10)
    return out.decode(errors="replace")[-300:]


def profile_smtp_run(opts: Options, kind: str, dest: Path) -> dict[str, Any]:
    """A fresh postroom, small c=16 for `profile_seconds`, py-spy attached for the load."""
    run = start_target("postroom", opts.nice, opts.src)
    spy: subprocess.Popen[bytes] | None = None

    def attach() -> None:
        nonlocal spy
        spy = start_spy(run.pid, kind, dest, opts.profile_seconds)

    try:
        prof_opts = Options(**{**opts.__dict__, "seconds": opts.profile_seconds})
        res, _ = drive(run, "small", 16, prof_opts, run.root / "ids.tsv", before_go=attach)
        res["py_spy_output"] = finish_spy(spy)
        spy = None
        return res
    finally:
        if spy is not None and spy.poll() is None:
            spy.terminate()
            spy.wait(10)
        run.stop()
        cleanup(run)


def profile(opts: Options) -> None:
    summary: dict[str, Any] = {}
    rates: dict[str, Any] = {}
    for kind in PROFILES:
        ext = "svg" if kind == "flamegraph" else "txt"
        suffix = "" if kind in ("flamegraph", "threads") else f"_{kind}"
        dest = opts.out / f"profile_small_c16{suffix}.{ext}"
        res = profile_smtp_run(opts, kind, dest)
        rates[kind] = {"msgs_per_s": res["msgs_per_s"], "errors": res["errors_by_code"],
                       "error_samples": res["error_samples"][:2]}
        log(f"profile small c=16 ({kind}): {res['msgs_per_s']:.0f} msg/s, errors "
            f"{res['errors_by_code']} -> {dest.name}")
        if ext == "txt" and dest.exists():
            summary[f"small_c16_{kind}"] = report.summarise_profile(dest)
    summary["rates"] = rates
    path = opts.out / "profile_summary.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(summary)
    path.write_text(json.dumps(old, indent=1))


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 repeat of 3 s per point, short download and profile")
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                    help=f"of {', '.join(TARGETS)} (default: {', '.join(DEFAULT_TARGETS)})")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--seconds", type=float, help="time bound of each load run (full: 8)")
    ap.add_argument("--grace", type=float, default=120.0)
    ap.add_argument("--quiet-wait", type=float, help="max seconds to wait for an idle machine")
    ap.add_argument("--quiet-pct", type=float, default=15.0,
                    help="idle means under this %% of one core busy")
    ap.add_argument("--bg-limit", type=float, default=50.0,
                    help="re-run once when foreign CPU exceeded this %% of one core")
    ap.add_argument("--ready-timeout", type=float, default=180.0)
    ap.add_argument("--no-smtp", action="store_true")
    ap.add_argument("--no-download", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--nice", type=int, default=-10,
                    help="nice level of targets and generators (negative needs root; 0: off)")
    ap.add_argument("--postroom-src", default="head",
                    help="'head' (git archive of HEAD, default), a commit (git archive of it), "
                    "'worktree' (the working tree as it is), or a folder")
    ap.add_argument("--out", type=Path, help="results folder (full: bench/results, "
                    "quick: bench/results/quick)")
    ap.add_argument("--readme", type=Path,
                    help="report to write (full: bench/README.md, quick: <out>/README.md)")
    a = ap.parse_args(argv)
    quick = a.quick
    out = a.out or (BENCH / "results" / "quick" if quick else BENCH / "results")
    opts = Options(
        targets=[t for t in a.targets.split(",") if t],
        workloads=[w for w in a.workloads.split(",") if w],
        concurrency=[int(c) for c in a.concurrency.split(",") if c],
        repeats=a.repeats or (1 if quick else 3),
        seconds=a.seconds or (3.0 if quick else 8.0), grace=a.grace,
        quiet_wait=a.quiet_wait if a.quiet_wait is not None else (1.0 if quick else 10.0),
        quiet_pct=a.quiet_pct, bg_limit=a.bg_limit if not quick else 1e9,
        ready_timeout=a.ready_timeout if not quick else min(a.ready_timeout, 60.0),
        download_seconds=3.0 if quick else 8.0, download_repeats=1 if quick else 3,
        profile_seconds=3.0 if quick else 8.0, nice=a.nice, out=out,
        readme=a.readme or (out / "README.md" if quick else BENCH / "README.md"),
        src=REPO, quick=quick)
    for t in opts.targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t}")
    for w in opts.workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w}")
    return opts, a


def postroom_source(spec: str, tmp: Path) -> tuple[Path, str, str]:
    """(import path, description, commit) for --postroom-src."""
    if spec == "worktree":
        return REPO, "working tree (uncommitted edits included)", git_state()["commit"]
    if spec != "head" and Path(spec).is_dir():
        return Path(spec).resolve(), str(Path(spec).resolve()), ""
    commit = export_commit("HEAD" if spec == "head" else spec, tmp)
    return tmp, f"git archive of {commit[:12]}", commit


def main(argv: list[str] | None = None) -> None:
    opts, a = parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-postroom-src-"))
    try:
        opts.src, source, commit = postroom_source(a.postroom_src, tmp)
        phases = [name for name, skip in (("smtp", a.no_smtp), ("download", a.no_download),
                                          ("profile", a.no_profile)) if not skip]
        this_run: dict[str, Any] = {
            "command": " ".join([".venv/bin/python -m bench.run_smtp_bench",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "phases": phases, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "postroom_source": source, "commit": commit}
        meta_path = opts.out / "meta.json"
        if len(phases) < 3 and meta_path.exists():
            # Only some phases are re-run: the rest of the results (and their meta) stay.
            meta: dict[str, Any] = json.loads(meta_path.read_text())
            meta.setdefault("runs", []).append(this_run)
        else:
            meta = {"mode": "quick" if opts.quick else "full", "machine": machine_info(),
                    "versions": tool_versions(), "git": git_state(),
                    "options": {k: str(v) for k, v in opts.__dict__.items()},
                    "runs": [this_run]}
        log(f"postroom from {source}; results in {opts.out}")
        meta_path.write_text(json.dumps(meta, indent=1))
        if not a.no_profile:
            (opts.out / "profile_summary.json").unlink(missing_ok=True)
        t0 = time.monotonic()
        if not a.no_smtp:
            with open(opts.out / "smtp_runs.jsonl", "w") as out:
                smtp_matrix(opts, out)
        if not a.no_download:
            with open(opts.out / "download_runs.jsonl", "w") as out:
                try:
                    download_bench(opts, out, profile=not a.no_profile)
                except Exception as e:
                    log(f"download benchmark failed: {e!r}")
                    out.write(json.dumps({"kind": "download", "failed": repr(e)[:2000]}) + "\n")
        if not a.no_profile:
            try:
                profile(opts)
            except Exception as e:
                log(f"profile failed: {e!r}")
        this_run["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        this_run["duration_s"] = time.monotonic() - t0
        meta_path.write_text(json.dumps(meta, indent=1))
        report.write_report(opts.out, opts.readme)
        log(f"report written to {opts.readme} ({this_run['duration_s'] / 60:.1f} min)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
