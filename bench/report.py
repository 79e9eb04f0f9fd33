"""Turn bench/results/*.jsonl into bench/README.md (tables, goals with pass/fail, profile).

Values are the median of the repeats with (min–max); a target's ratio to a peer (Postfix with
its queue, smtp-sink) is taken per repeat (the targets of one repeat ran back to back) and then
summarised the same way.
Hand-written findings in `<results>/notes.md` are included verbatim.

    .venv/bin/python -m bench.report                       # bench/results -> bench/README.md
    .venv/bin/python -m bench.report --results bench/results/quick --readme /tmp/README.md
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
TARGET_ORDER = ["postroom", "postfix-queue", "smtp-sink", "aiosmtpd"]
POSTFIX = "postfix-queue"
WORKLOAD_ORDER = ["small", "medium", "large"]
WORKLOAD_TEXT = {
    "small": "small (1 × 20,000 B attachment, ≈28.9 kB message)",
    "medium": "medium (2 × 1,000,000 B, ≈2.74 MB message)",
    "large": "large (1 × 10,000,000 B, ≈13.7 MB message)",
}
MiB = 2**20

# Issue 24's goals: (label, workload, concurrency, minimum ratio to Postfix's queue)
RATIO_GOALS = [("small c=16 msgs/s ≥ 1.0× Postfix's queue", "small", 16, 1.0),
               ("large c=16 msgs/s ≥ 1.0× Postfix's queue", "large", 16, 1.0)]
RSS_GOAL_MIB = 150
READY_GOAL_MS = 10.0
SETTLE_GOAL_S = 3.0  # every message ready within this long after the load's end
CPU_GOAL_MS = 1.5  # postroom's CPU per small message at c=16, extraction included
STATUS_GOAL = 2000.0  # GET of an attachment's status, req/s at c=16
STATUS_ENDPOINT = "GET /v1/messages/{id}/attachments/0"


# --------------------------------------------------------------------------- helpers

def load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def num(v: float | None) -> str:
    """A number with about three significant digits."""
    if v is None:
        return "–"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}" if a >= 0.01 else f"{v:.2g}"


def med(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def med_rng(values: Iterable[float | None], f: Callable[[float | None], str] = num) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    m = statistics.median(vals)
    if len(vals) == 1:
        return f(m)
    return f"{f(m)} ({f(min(vals))}–{f(max(vals))})"


def secs(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v * 1e3:.0f} ms" if v < 1 else f"{v:.1f} s"


def table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|",
            *["| " + " | ".join(r) + " |" for r in rows]]


# --------------------------------------------------------------------------- profile

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Components a stack can pass through (first match on the file path), for inclusive shares.
COMPONENTS = [
    ("postroom SMTP front (daemon/smtp/)", "daemon/smtp/"),
    ("postroom ingest: raw store + row commit (daemon/pipeline/ingest.py)",
     "daemon/pipeline/ingest.py"),
    ("postroom extraction pipeline (daemon/pipeline/)", "daemon/pipeline/"),
    ("MIME extractors (extractors/)", "extractors/"),
    ("local object store (storage/local.py)", "storage/local.py"),
    ("SQLAlchemy / SQLModel", "sqlalchemy/"),
    ("aiosqlite (DB thread)", "aiosqlite/"),
    ("aiosmtpd protocol", "aiosmtpd/"),
    ("HTTP API (uvicorn/starlette/fastapi)", "uvicorn/|starlette/|fastapi/"),
    ("postroom HTTP API (daemon/api/)", "daemon/api/"),
    ("presigned URLs (storage/presign.py)", "storage/presign.py"),
    ("pydantic", "pydantic"),
    ("structlog", "structlog/"),
]

# Where the sampled CPU finally is (the leaf frame's file), in this order of precedence.
LEAF_BUCKETS = [
    ("sqlite3 C library, run by aiosqlite's threads (SQL, WAL, fsync, lock waits)",
     r"aiosqlite/|sqlite3/"),
    ("SQLAlchemy / SQLModel (Python)", r"sqlalchemy/|sqlmodel/"),
    ("extractors/ (MIME walk, decoding)", r"extractors/"),
    ("stdlib email / base64 / quopri", r"email/|base64\.py|quopri\.py|binascii"),
    ("local store: write, fsync, rename", r"storage/local\.py|shutil\.py|tempfile\.py"),
    ("postroom daemon/*.py (own code)", r"daemon/"),
    ("storage/ (other)", r"storage/"),
    ("aiosmtpd", r"aiosmtpd/"),
    ("uvloop C code under Runner.run (socket I/O, callbacks; maybe epoll)",
     r"asyncio/runners\.py"),
    ("asyncio Python code (streams, tasks)", r"asyncio/|uvloop/"),
    ("thread pool / threading", r"threading\.py|concurrent/"),
    ("HTTP (uvicorn/starlette/fastapi/pydantic)", r"uvicorn/|starlette/|fastapi/|pydantic"),
    ("structlog / logging", r"structlog/|logging/"),
    ("hashlib / hmac", r"hashlib|hmac"),
    ("puremagic (type sniffing)", r"puremagic/"),
    ("class creation (abc/typing; aiosmtpd's _getaddr defines a Protocol per call)",
     r"<frozen abc>|typing\.py"),
    ("paths (pathlib, posixpath)", r"pathlib\.py|posixpath"),
]


# What a thread is doing, from native frames (only `--native` profiles have them); first match.
NATIVE_STATES = [
    ("waiting for the SQLite write lock (busy handler sleeps)", "sqlite3InvokeBusyHandler"),
    ("in fsync / fdatasync", r"\bf(data)?sync \("),
    ("waiting for the GIL", "take_gil"),
    ("idle: waiting for work (queue / condition)",
     "_queue_SimpleQueue_get|Condition.wait|PyThread_acquire_lock"),
    ("idle: event loop in epoll", "epoll_wait|epoll_pwait"),
]


def _queue_wait_frames() -> set[str]:
    """`func (file:line)` of the lines where idle worker threads block on their queue: aiosqlite's
    connection thread and concurrent.futures' pool workers. py-spy cannot tell these blocking C
    calls from work, so the summary files them under an "idle" bucket of their own."""
    import inspect
    out = set()
    targets: list[tuple[str, str, str, str]] = [
        ("aiosqlite.core", "_connection_worker_thread", "aiosqlite/core.py", "tx.get("),
        ("concurrent.futures.thread", "_worker", "concurrent/futures/thread.py",
         "work_queue.get("),
    ]
    for module, func, short, needle in targets:
        try:
            mod = __import__(module, fromlist=[func])
            lines, start = inspect.getsourcelines(getattr(mod, func))
        except (ImportError, AttributeError, OSError, TypeError):
            continue
        out |= {f"{func} ({short}:{start + i})" for i, text in enumerate(lines) if needle in text}
    return out


IDLE_BUCKET = "idle: aiosqlite / thread-pool worker blocked on its queue"


def summarise_profile(path: Path) -> dict[str, Any]:
    """Top functions and components of a `py-spy record --format raw --threads` file."""
    total = 0
    states: Counter[tuple[str, str]] = Counter()
    queue_waits = _queue_wait_frames()
    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        frames = frames[1:]
        name = thread.split(":", 1)[1].strip() if ":" in thread else thread
        name = re.sub(r"_\d+$|-\d+(_\d+)?", "-N", name)
        threads[name] += n
        total += n
        parsed = []
        for fr in frames:
            m = _FRAME.match(fr)
            parsed.append((m.group("func"), m.group("file")) if m else (fr, ""))
        if not parsed:
            continue
        func, file = parsed[-1]
        waiting = frames[-1] in queue_waits
        leaf[f"{func} ({file})" + (" [queue wait]" if waiting else "")] += n
        for key in {f"{f} ({p})" for f, p in parsed}:
            inclusive[key] += n
        files = [p for _, p in parsed]
        for label, pattern in COMPONENTS:
            if any(re.search(pattern, p) for p in files):
                components[label] += n
        bucket = IDLE_BUCKET if waiting else next(
            (label for label, pattern in LEAF_BUCKETS if re.search(pattern, file)), "other")
        buckets[bucket] += n
        state = next((label for label, pattern in NATIVE_STATES if re.search(pattern, stack)),
                     "running (or other)")
        states[(name, state)] += n

    def top(c: Counter[str], k: int) -> list[list[Any]]:
        return [[key, v, 100 * v / total if total else 0] for key, v in c.most_common(k)]
    native = any(label != "running (or other)" for _, label in states)
    return {"samples": total, "threads": top(threads, 10), "leaf": top(leaf, 15),
            "inclusive": top(inclusive, 25), "components": top(components, 20),
            "leaf_buckets": top(buckets, 20),
            "states": [[t, label, v, 100 * v / threads[t] if threads[t] else 0]
                       for (t, label), v in states.most_common()] if native else []}


# --------------------------------------------------------------------------- report

def group(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, list[dict[str, Any]]]]:
    out: dict[tuple[str, int], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list))
    for r in rows:
        if r.get("failed") or r.get("superseded"):
            continue
        out[(r["workload"], r["concurrency"])][r["target"]].append(r)
    return out


def ratios(mine: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> list[float]:
    """Per-repeat ratios (paired by repeat number) of `key`."""
    by_rep = {r["rep"]: r[key] for r in base if r.get(key)}
    return [r[key] / by_rep[r["rep"]] for r in mine if r.get(key) is not None
            and by_rep.get(r["rep"])]


def cpu_ms_per_msg(r: dict[str, Any]) -> float | None:
    """A run's CPU per accepted message: the target's process tree from the load's start until
    it was quiet after it (postroom's extraction, Postfix's delivery included); runs recorded
    before the drain was measured count the load alone."""
    cpu = r.get("target_cpu_s_drained", r.get("target_cpu_s"))
    return None if cpu is None or not r.get("ok") else 1e3 * cpu / r["ok"]


def ready_of(r: dict[str, Any]) -> dict[str, Any]:
    ready: dict[str, Any] = r.get("ready") or {}
    return ready


def smtp_section(rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    groups = group(rows)
    keys = sorted(groups, key=lambda k: (WORKLOAD_ORDER.index(k[0]), k[1]))
    for wl, c in keys:
        g = groups[(wl, c)]
        base, postfix = g.get("smtp-sink", []), g.get(POSTFIX, [])
        out += ["", f"### {WORKLOAD_TEXT.get(wl, wl)}, c={c}", ""]
        body = []
        for name in sorted(g, key=lambda t: TARGET_ORDER.index(t) if t in TARGET_ORDER else 9):
            rs = g[name]
            ready = [ready_of(r) for r in rs]
            ttr = "–"
            if name == "postroom":
                never = sum(x.get("never_terminal") or 0 for x in ready)
                ttr = med_rng([x.get("time_to_ready_s") for x in ready], secs)
                if never:
                    ttr += f" ⚠ {never} never terminal"
            errs = sum(r["errors"] for r in rs)
            ratio = "1" if name == "smtp-sink" else med_rng(ratios(rs, base, "msgs_per_s"),
                                                            lambda v: f"{v:.2f}×")
            to_postfix = "1" if name == POSTFIX else med_rng(
                ratios(rs, postfix, "msgs_per_s"), lambda v: f"{v:.2f}×") if postfix else "–"
            body.append([
                name, med_rng(r["msgs_per_s"] for r in rs), med_rng(r["mb_per_s"] for r in rs),
                med_rng(r["p50_ms"] for r in rs), med_rng(r["p99_ms"] for r in rs), ttr,
                med_rng((r["peak_rss"] / MiB for r in rs), lambda v: f"{v:.0f}" if v else "–"),
                f"{med(r['target_cpu_pct'] for r in rs) or 0:.0f}",
                med_rng(cpu_ms_per_msg(r) for r in rs),
                f"{med(r['client_cpu_pct'] for r in rs) or 0:.0f}",
                f"{max(r['bg_cpu_pct'] for r in rs):.0f}",
                str(errs) if not errs else f"**{errs}** {dict(sum((Counter(r['errors_by_code']) for r in rs), Counter()))}",  # noqa: E501
                to_postfix, ratio, str(len(rs))])
        out += table(["target", "msgs/s", "MB/s", "p50 ms", "p99 ms", "time to ready",
                      "peak RSS MiB", "CPU %", "CPU ms/msg", "gen CPU %", "bg CPU % (max)",
                      "SMTP errors", "÷ Postfix queue", "÷ smtp-sink", "runs"], body)
    return out


def ready_section(rows: list[dict[str, Any]]) -> list[str]:
    groups = group(rows)
    body = []
    for wl, c in sorted(groups, key=lambda k: (WORKLOAD_ORDER.index(k[0]), k[1])):
        rs = groups[(wl, c)].get("postroom", [])
        if not rs:
            continue
        ready = [ready_of(r) for r in rs]
        statuses: Counter[str] = Counter()
        for x in ready:
            statuses.update(x.get("statuses") or {})
        body.append([
            f"{wl} c={c}", med_rng(float(x.get("queued") or 0) for x in ready),
            med_rng([x.get("time_to_ready_s") for x in ready], secs),
            med_rng([x.get("time_to_ready_poll_s") for x in ready], secs),
            med_rng(x.get("ready_after_250_p50_ms") for x in ready),
            med_rng(x.get("ready_after_250_p99_ms") for x in ready),
            med_rng(x.get("received_to_processed_p50_ms") for x in ready),
            ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "–",
            str(sum(x.get("never_terminal") or 0 for x in ready))])
    if not body:
        return []
    return ["", "## Time to ready (postroom)", "",
            "After the load ends the newest queued message is polled (`GET /v1/messages/{id}` "
            "every 50 ms; the job queue is FIFO) until its status is `ready`/`partial`/"
            "`failed`, then every queued id is fetched (4 at a time) and re-polled until "
            "terminal. Polling is kept this light because each GET costs postroom several "
            "database round trips: on commit 7cb6c48, polling all ids continuously made the "
            "small c=16 time to ready ≈30 s instead of ≈16 s. *Time to ready* = last "
            "`processed_at` − the client's last 250; *poll* = when the poller saw the newest "
            "message terminal (an upper bound). *250→ready* is per message: the latest "
            "attachment `ready_at` (else `processed_at`) − the wall time the client read that "
            "message's 250 (server timestamps have 1 ms resolution). *received→processed* uses "
            "only server timestamps.", "",
            *table(["point", "messages", "time to ready", "poll", "250→ready p50 ms",
                    "250→ready p99 ms", "received→processed p50 ms",
                    "statuses (all repeats)", "never terminal"], body)]


def endpoint_lines(rows: list[dict[str, Any]]) -> list[str]:
    eps = [r for r in rows if r.get("kind") == "endpoint"]
    if not eps:
        return []
    return ["", "Other endpoints on the same instance, same client and c=16, one run each, to "
            "place the download rate between the HTTP stack's own ceiling and the other "
            "database readers:", "",
            *table(["request", "req/s", "p50 ms", "p99 ms", "postroom CPU %", "answers"],
                   [[r["endpoint"], num(r["req_per_s"]), num(r["p50_ms"]), num(r["p99_ms"]),
                     f"{r['target_cpu_pct']:.0f}",
                     ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))]
                    for r in eps])]


def download_section(all_rows: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in all_rows if r.get("kind") != "endpoint"]
    ok = [r for r in rows if not r.get("failed")]
    failed = [r for r in rows if r.get("failed")]
    out = ["", "## Download URLs (postroom)", ""]
    if failed:
        out.append(f"Failed: `{failed[0]['failed'][:300]}`")
    if not ok:
        return out
    statuses: Counter[str] = Counter()
    for r in ok:
        statuses.update(r["statuses"])
    out += [f"`POST /v1/messages/{{id}}/attachments/0/download` (body `{{\"expires_in\": 60}}`) "
            f"at c=16 over {ok[0]['seeded']} seeded small messages, keep-alive connections, raw "
            f"asyncio HTTP/1.1 client (`bench/http_load.py`), {len(ok)} run(s) of "
            f"{num(ok[0]['elapsed_s'])} s. The URL of one answer was fetched and its bytes "
            f"matched the stated sha256: {'yes' if ok[0].get('url_verified') else 'NO'}.", "",
            *table(["req/s", "p50 ms", "p99 ms", "postroom CPU %", "client CPU %",
                    "bg CPU % (max)", "peak RSS MiB", "answers"],
                   [[med_rng(r["req_per_s"] for r in ok), med_rng(r["p50_ms"] for r in ok),
                     med_rng(r["p99_ms"] for r in ok),
                     f"{med(r['target_cpu_pct'] for r in ok) or 0:.0f}",
                     f"{med(r['client_cpu_pct'] for r in ok) or 0:.0f}",
                     f"{max(r['bg_cpu_pct'] for r in ok):.0f}",
                     f"{max(r['peak_rss'] for r in ok) / MiB:.0f}",
                     ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))]])]
    return out + endpoint_lines(all_rows)


def goals_section(rows: list[dict[str, Any]], downloads: list[dict[str, Any]]) -> list[str]:
    groups = group(rows)
    body = []

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("PASS" if ok else "**FAIL**")

    for label, wl, c, goal in RATIO_GOALS:
        g = groups.get((wl, c), {})
        rs = ratios(g.get("postroom", []), g.get(POSTFIX, []), "msgs_per_s")
        m = med(rs)
        body.append([label, med_rng(rs, lambda v: f"{v:.3f}×"),
                     verdict(None if m is None else m >= goal)])
    for wl in ("small", "large"):
        runs = groups.get((wl, 16), {}).get("postroom", [])
        settle = [ready_of(r).get("time_to_ready_s") for r in runs]
        known = [v for v in settle if v is not None]
        body.append([f"{wl} c=16 every message ready ≤ {SETTLE_GOAL_S:.0f} s after the load "
                     "(judged on the max)", med_rng(settle, lambda v: f"{v:.2f} s"),
                     verdict(None if not known else max(known) <= SETTLE_GOAL_S)])
    large = groups.get(("large", 16), {}).get("postroom", [])
    rss = [r["peak_rss"] / MiB for r in large]
    body.append([f"large c=16 peak RSS of the process tree ≤ {RSS_GOAL_MIB} MiB (judged on "
                 "the max)", med_rng(rss, lambda v: f"{v:.0f} MiB" if v else "–"),
                 verdict(None if not rss else max(rss) <= RSS_GOAL_MIB)])
    small = groups.get(("small", 16), {})
    cpu = [cpu_ms_per_msg(r) for r in small.get("postroom", [])]
    m = med(cpu)
    peer = med(cpu_ms_per_msg(r) for r in small.get(POSTFIX, []))
    body.append([f"small c=16 CPU ≤ {CPU_GOAL_MS} ms a message, extraction included"
                 + (f" (Postfix's queue: {peer:.2f} ms)" if peer else ""),
                 med_rng(cpu, lambda v: f"{v:.2f} ms" if v is not None else "–"),
                 verdict(None if m is None else m <= CPU_GOAL_MS)])
    small1 = groups.get(("small", 1), {}).get("postroom", [])
    p50 = [ready_of(r).get("ready_after_250_p50_ms") for r in small1]
    m = med(p50)
    body.append([f"small c=1 p50 250→ready ≤ {READY_GOAL_MS:.0f} ms", med_rng(p50,
                 lambda v: f"{v:.1f} ms" if v is not None else "–"),
                 verdict(None if m is None else m <= READY_GOAL_MS)])
    status = [r["req_per_s"] for r in downloads if r.get("kind") == "endpoint"
              and r.get("endpoint") == STATUS_ENDPOINT]
    m = med(status)
    body.append([f"`{STATUS_ENDPOINT}` (a status) ≥ {STATUS_GOAL:,.0f} req/s (c=16)",
                 med_rng(status), verdict(None if m is None else m >= STATUS_GOAL)])
    post = [r for r in rows if r.get("target") == "postroom" and not r.get("superseded")]
    errs = sum(r.get("errors", 0) for r in post) + sum(1 for r in post if r.get("failed"))
    never = sum(ready_of(r).get("never_terminal") or 0 for r in post)
    body.append(["(extra) no SMTP errors, every queued message terminal",
                 f"{errs} errors, {never} never terminal",
                 verdict(None if not post else errs == 0 and never == 0)])
    return ["", "## Goals (issue 24)", "",
            "Ratios are postroom ÷ Postfix with its real queue (fsync before 250, a discard "
            "transport: `../shared/bench/postfix_queue.sh`) of msgs/s per repeat, median "
            "(min–max). They "
            "count accepted messages (250s); that postroom kept up is the time to ready after "
            "the load. CPU per message is the target's whole process tree from the load's "
            "start until it is quiet after it, ÷ messages accepted.", "",
            *table(["goal", "measured", "verdict"], body, "lrl")]


def _pct_table(title: str, rows: list[list[Any]], k: int = 12) -> list[str]:
    return ["", title, "", *table(["", "%"], [[f"`{key}`" if "(" in str(key) else str(key),
                                                f"{p:.1f}"] for key, _, p in rows[:k]])]


def profile_section(out_dir: Path) -> list[str]:
    path = out_dir / "profile_summary.json"
    if not path.exists():
        return []
    s = json.loads(path.read_text())
    rates = s.get("rates", {})

    def rate(kind: str) -> str:
        r = rates.get(kind) or {}
        errs = r.get("errors") or {}
        return (f"{r.get('msgs_per_s', 0):.0f} msgs/s" + (f", errors {errs}" if errs else "")
                if r else "–")

    lines = ["", "## Profile", "",
             "py-spy 0.4 attached to the postroom process (`py-spy record --pid PID --rate 100 "
             "…`) during a small c=16 run, each flavour on a fresh instance: flame graph "
             "[`results/profile_small_c16.svg`](results/profile_small_c16.svg) "
             f"({rate('flamegraph')} under the profiler); `--threads` "
             f"`results/profile_small_c16.txt` ({rate('threads')}); `--gil` (only the thread "
             f"holding the GIL, i.e. where Python CPU goes) `results/profile_small_c16_gil.txt` "
             f"({rate('gil')}); `--native` (C frames too; py-spy then pauses the process per "
             f"sample, so rates drop — read it for where threads *wait*) "
             f"`results/profile_small_c16_native.txt` ({rate('native')}). Without `--native`, "
             "py-spy leaves out idle threads, so shares are of *busy* samples (a thread inside "
             "a C call such as sqlite3's counts as busy)."]
    for flavour, title, top in (("small_c16_threads", "all busy threads", 10),
                                ("small_c16_gil", "GIL holder only", 12)):
        p = s.get(flavour)
        if p:
            lines += ["", f"**small c=16, {title}** ({p['samples']} samples):"]
            lines += _pct_table("By thread:", p["threads"], 6)
            lines += _pct_table("Where the sample's innermost Python frame is:",
                                p["leaf_buckets"])
            lines += _pct_table("Stacks passing through (inclusive, overlapping):",
                                p["components"])
            lines += _pct_table("Top innermost functions:", p["leaf"], top)
    n = s.get("small_c16_native")
    if n and n.get("states"):
        lines += ["", f"**small c=16, native stacks** ({n['samples']} samples, idle threads "
                  "included): what each kind of thread was doing, in % of its samples", "",
                  *table(["thread", "state", "%"],
                         [[th, st, f"{p:.0f}"] for th, st, v, p in n["states"] if p >= 1],
                         "llr")]
    d = s.get("download_c16_threads")
    if d:
        lines += ["", f"**download URLs c=16, all busy threads** ({d['samples']} samples, "
                  f"{s.get('download_rate_under_profiler', 0):.0f} req/s under the profiler; "
                  "flame graph [`results/profile_download_c16.svg`]"
                  "(results/profile_download_c16.svg)):"]
        lines += _pct_table("Where the sample's innermost Python frame is:", d["leaf_buckets"])
        lines += _pct_table("Stacks passing through (inclusive, overlapping):", d["components"])
        lines += _pct_table("Top innermost functions:", d["leaf"], 10)
    return lines


def _spread_text(v: dict[str, float] | None, f: Callable[[float], str] = num) -> str:
    if not v:
        return "–"
    if v["min"] == v["max"]:
        return f(v["median"])
    return f"{f(v['median'])} ({f(v['min'])}–{f(v['max'])})"


def _ms(v: dict[str, float] | None) -> str:
    return _spread_text(v and {k: 1e3 * x for k, x in v.items()})


def _latest_run(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The records of `kind` of the newest run that has any."""
    runs = [r["run"] for r in records if r.get("kind") == kind]
    return [r for r in records if r.get("kind") == kind and r["run"] == runs[-1]] if runs else []


# Mail without documents: the A/B variants the issue's goal (no measurable effect) is about.
NO_DOCUMENT_VARIANTS = ("plain", "small")


def content_section(records: list[dict[str, Any]]) -> list[str]:
    """Issue 22 item 7: results/content.jsonl (bench/content.py)."""
    formats = _latest_run(records, "content_format")
    newest: dict[tuple[str, float], dict[str, Any]] = {}
    for r in records:
        if r.get("kind") == "content_ab":
            newest[(r["variant"], r.get("rate") or 0.0)] = r
    order = {v: i for i, v in enumerate(("plain", "small", "pdf"))}
    ab = [newest[k] for k in sorted(newest, key=lambda k: (order.get(k[0], 9), k[1]))]
    if not formats and not ab:
        return []
    headers = {r["run"]: r for r in records if r.get("kind") == "content_run"}
    out = ["", "## Content (issue 22)", "",
           "What reading attachments' text costs: `.venv/bin/python -m bench.content` "
           "(`bench/content.py`; records in `results/content.jsonl`, the newest shown)."]
    if formats:
        run = headers.get(formats[0]["run"], {})
        large = [r for r in formats if r["size_class"] == "large"]
        small = {r["format"]: r for r in formats if r["size_class"] == "small"}
        out += ["", f"**Per format** (run `{formats[0]['run']}`, {formats[0]['date']}, commit "
                f"`{formats[0]['commit']}`; {formats[0]['machine_note']}). Each document is "
                f"made by bench/content.py with about {run.get('chars', 0):,} characters of "
                "prose-like text and read through a real `ContentPool` (a warm worker, the "
                "daemon's defaults but `content.timeout` raised to "
                f"{large[0]['timeout_s'] if large else '?':g} s), one read at a time: median "
                f"(min–max) of {large[0]['repeats'] if large else '?'} reads. *worker ms* is "
                "the wall time of `pool.read` (what a message waits), *CPU* the worker "
                "process's; *in-process* is `read_document` in the bench's own process. "
                "ms/MB = worker wall ms ÷ MB of file (10^6 bytes), ms/M chars ÷ millions of "
                "characters of text out. *small doc* is the 40-word document of "
                "tests/content/documents.py in that format (the fixed cost of one read, median "
                f"of {small[next(iter(small))]['repeats'] if small else '?'}). "
                "⚠ marks a read that was cut short (truncated), did not come out ready, or "
                f"took longer than the daemon's content.timeout "
                f"({large[0]['default_timeout_s'] if large else 10:g} s).", ""]
        body = []
        for r in large:
            flags = []
            if r.get("status") != "ready":
                flags.append(f"⚠ {r.get('status')}: {str(r.get('error'))[:80]}")
            if r.get("truncated"):
                flags.append("⚠ truncated")
            if r.get("over_default_timeout"):
                flags.append("⚠ over content.timeout")
            if r.get("in_worker") is False:
                flags.append("read in the daemon's process (a thread), no worker")
            sm = small.get(r["format"], {})
            body.append([
                f"{r['format']} (`{r['reader']}`)" + (" " + "; ".join(flags) if flags else ""),
                f"{r['file_bytes'] / 1e6:.3f}", f"{r.get('text_chars', 0):,}",
                _ms(r.get("worker_wall_s")), _ms(r.get("worker_cpu_s")),
                _ms(r.get("inproc_wall_s")), num(r.get("ms_per_file_mb")),
                num(r.get("ms_per_text_mb")), num(r.get("worker_peak_rss_mib")),
                f"{sm.get('file_bytes', 0) / 1e3:.1f} kB, "
                f"{num(1e3 * ((sm.get('worker_wall_s') or {}).get('median') or 0))} ms"
                if sm else "–"])
        out += table(["format (reader)", "file MB", "text chars", "worker ms", "worker CPU ms",
                      "in-process ms", "ms/MB file", "ms/M chars", "worker peak RSS MiB",
                      "small doc: size, worker ms"], body)
        pooled = [r for r in formats if r.get("in_worker") is not False]
        idle = [r.get("worker_rss_idle_mib") for r in pooled]
        spawn = [1e3 * r["spawn_wall_s"] for r in pooled if r.get("spawn_wall_s")]
        spawn_cpu = [1e3 * r["spawn_cpu_s"] for r in pooled if r.get("spawn_cpu_s")]
        parent = [1e3 * ((r.get("parent_cpu_s") or {}).get("median") or 0) for r in pooled]
        out += ["", "Over the formats read in a worker: a new worker, after its first (small) "
                f"document, holds {med_rng(idle, lambda v: f'{v or 0:.0f}')} MiB RSS; that "
                f"first read, the worker's start included, takes "
                f"{med_rng(spawn, lambda v: f'{v or 0:.0f}')} ms "
                f"({med_rng(spawn_cpu, lambda v: f'{v or 0:.0f}')} ms of its CPU). The "
                "daemon's side of a read in a worker (pipes, unpickling the answer) costs "
                f"{med_rng(parent, lambda v: f'{v or 0:.2f}')} ms of the daemon's CPU."]
    if ab:
        first = ab[0]
        head = headers.get(max(r["run"] for r in ab), {})
        out += ["", "**Small-mail throughput, content reading on (HEAD) against off** (HEAD = "
                f"{first.get('head_source') or head.get('head_source', '?')}, off = "
                f"{first.get('base_source') or head.get('base_source', '?')}, the commit "
                "before content reading; each row from the newest run of its variant and "
                "load). A fresh postroom per run (embedded defaults, `[auth] enabled = false` "
                f"on both sides), `bench.smtp_load` at c={first['concurrency']} for "
                f"{first['seconds']:g} s, closed loop (saturating) unless a rate is offered, "
                "the two sides alternating (a run disturbed by other work on the shared "
                "machine is run again once). msgs/s counts 250s, but `pipeline.max_lag` holds "
                "SMTP back while extraction lags, so saturated it is what the whole pipeline "
                "sustains. CPU ms/msg: postroom's process tree (daemon, extraction worker, "
                "content workers) from the load's start until the tree is quiet after it, ÷ "
                "messages accepted. Ratios are paired by repeat, median (min–max); *off "
                "spread* is the off side's runs ÷ their median.", ""]
        body = []
        for r in ab:
            ratio = r.get("msgs_ratio")
            load = f"{r['rate']:g} msgs/s offered" if r.get("rate") else "saturating"
            body.append([
                f"{r['variant']}: {r['text']}", f"{load}, {r['repeats']} a side, "
                f"`{r['run']}`", _spread_text(r["head"]["msgs_per_s"]),
                _spread_text(r["base"]["msgs_per_s"]),
                _spread_text(ratio, lambda v: f"{v:.3f}"),
                _spread_text(r.get("base_spread"), lambda v: f"{v:.3f}"),
                _spread_text(r["head"]["cpu_ms"], lambda v: f"{v:.2f}"),
                _spread_text(r["base"]["cpu_ms"], lambda v: f"{v:.2f}"),
                _spread_text(r.get("cpu_ms_diff"), lambda v: f"{v:+.2f}"),
                "– (msgs/s capped by the offered rate)" if r.get("rate") else
                "–" if r.get("measurable") is None else
                ("**measurable**" if r["measurable"] else "none measurable")])
        out += table(["variant", "load, runs, run", "HEAD msgs/s", "off msgs/s",
                      "msgs/s HEAD ÷ off", "off spread", "HEAD CPU ms/msg", "off CPU ms/msg",
                      "CPU ms/msg HEAD − off", "effect"], body, "llrrrrrrrr")
        for r in ab:
            seen = r.get("head_attachments") or {}
            if seen:
                out += ["", f"{r['variant']}: attachments by text status / sniffed type on the "
                        "HEAD side, all its runs: " + ", ".join(
                            f"{k} {v:,}" for k, v in sorted(seen.items(), key=lambda x: -x[1]))
                        + "."]
        sniff = head.get("small_attachment")
        if sniff:
            n = sniff["samples"]
            read = {k: v for k, v in sniff["reader"].items() if k != "None"}
            out += ["", f"What the readers make of the small workload's attachment ({n:,} "
                    "fresh ones through the extractor's sniffer and `document_kind`): "
                    + (", ".join(f"{v} ({100 * v / n:.1f} %) go to the `{k}` reader"
                                 for k, v in read.items()) or "none is a document")
                    + "; sniffed types: "
                    + ", ".join(f"{k} {v}" for k, v in sniff["sniffed"].items()) + "."]
        mine = [r for r in ab if r["variant"] in NO_DOCUMENT_VARIANTS and not r.get("rate")]
        if mine:
            hit = [r["variant"] for r in mine if r.get("measurable")]
            verdict = (f"**FAIL** (measurable for {', '.join(hit)})" if hit else "**PASS**")
            out += ["", "Rule: an effect is *measurable* when the median HEAD ÷ off ratio of "
                    "msgs/s is below 0.95 or outside the min–max spread of the off side's own "
                    "repeats (each ÷ their median); judged on the saturating loads.", "",
                    "Verdict on the goal “none measurable for mail without documents” ("
                    + ", ".join(r["variant"] for r in mine) + f"): {verdict}."]
    return out


def findings_auto(rows: list[dict[str, Any]], downloads: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        where = f"{r.get('target')} {r.get('workload')} c={r.get('concurrency')} rep={r.get('rep')}"
        if r.get("failed"):
            out.append(f"- {where}: run failed: `{r['failed'][:300]}`")
            continue
        if r.get("superseded"):
            continue
        if r.get("errors"):
            out.append(f"- {where}: {r['errors']} SMTP errors {r['errors_by_code']}; first: "
                       + "; ".join(f"`{s}`" for s in r.get("error_samples", [])[:3]))
        ready = ready_of(r)
        if ready.get("never_terminal"):
            out.append(f"- {where}: {ready['never_terminal']} of {ready['queued']} queued "
                       f"messages not terminal after the ready timeout; statuses seen "
                       f"{ready.get('statuses')}, poll problems {ready.get('poll_problems')}")
        if ready.get("errors"):
            out.append(f"- {where}: message errors: {ready['errors']}")
        if r.get("target") == "postroom" and r.get("exit_code") not in (0, None):
            out.append(f"- {where}: postroom exited {r.get('exit_code')} on SIGTERM")
        if r.get("log_tail"):
            interesting = [x for x in r["log_tail"] if x.strip() and not x.endswith(": ")]
            out += [f"  - log: `{x[:230]}…`" for x in interesting[-2:]]
    redone = [r for r in rows if r.get("superseded")]
    kept = [r for r in rows if not r.get("superseded") and not r.get("failed")]
    if redone:
        out.append(f"- {len(redone)} of {len(redone) + len(kept)} runs were disturbed by other "
                   f"work on the machine (bg CPU above the limit) and run again; the tables use "
                   f"the re-runs. In the kept runs bg CPU was median "
                   f"{med(r['bg_cpu_pct'] for r in kept) or 0:.0f} %, max "
                   f"{max((r['bg_cpu_pct'] for r in kept), default=0):.0f} % of one core.")
    for r in downloads:
        what = r.get("endpoint") or f"download rep={r.get('rep')}"
        if r.get("failed"):
            out.append(f"- download benchmark failed: `{r['failed'][:300]}`")
        elif any(k != "200" for k in r.get("statuses", {})):
            out.append(f"- {what}: answers {r['statuses']}; "
                       + "; ".join(f"`{x[:150]}`" for x in r.get("error_samples", [])[:2]))
    return out


def method_section(meta: dict[str, Any]) -> list[str]:
    m = meta.get("machine", {})
    v = meta.get("versions", {})
    git = meta.get("git", {})
    opts = meta.get("options", {})
    dirty = git.get("dirty_files") or []
    runs = meta.get("runs", [])
    lines = ["", "## How this was produced", "",
             f"{meta.get('mode', '?')} mode: {opts.get('repeats')} repeat(s) of "
             f"{opts.get('seconds')} s per point. Commands (from the repository root):", ""]
    for r in runs:
        dur = r.get("duration_s")
        lines.append(f"- `{r.get('command')}` — phases {', '.join(r.get('phases', []))}; "
                     f"postroom from {r.get('postroom_source')}; started {r.get('started')}"
                     + (f", took {dur / 60:.1f} min" if dur else "") + ".")
    lines += [
        "",
        f"- postroom commit `{git.get('commit', '')[:12]}` “{git.get('subject', '')}” (the "
        f"working tree had {len(dirty)} uncommitted file(s), not benchmarked: postroom runs "
        f"from a `git archive` of the commit with `PYTHONPATH`).",
        f"- Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gib', 0):.0f} GiB RAM, "
        f"{m.get('os')}, kernel {m.get('kernel')}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start', []))}. Shared and noisy: "
        f"other work ran on it during the benchmark (see bg CPU).",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "", "Method:", "",
        "- Targets, each started fresh for every run in a temp dir on free 127.0.0.1 ports and "
        "stopped by SIGTERM to its own process group: **postroom** (`python -m daemon serve`, "
        "embedded defaults: SQLite + local store in the temp dir, `log.level = \"warning\"`, an "
        "agent owning `*@bench.test` made with `postroom agent add … --json`), **postfix-queue** "
        "(`../shared/bench/postfix_queue.sh`: a private Postfix with its real queue, fsync "
        "before 250, "
        "relaying `bench.test` to a discard transport; started by the script, sampled from its "
        "master's pid and stopped with `postfix stop`), **smtp-sink** (`smtp-sink -u nobody "
        "127.0.0.1:PORT 1024`, Postfix's test sink: nothing stored, the ceiling) and, when "
        "asked for, **aiosmtpd** (`bench/sink_aiosmtpd.py`: stock aiosmtpd on uvloop, handler "
        "answers 250).",
        "- Generator `bench/smtp_load.py` on uvloop, one process, C connections each reused for "
        "all its messages, no PIPELINING. Messages: text part + K base64 attachments of random "
        "bytes, from a pool of distinct bodies (512 small, 8 medium, 4 large) plus a unique "
        "`X-Bench-Seq` header per message, all built, CRLF-normalised and dot-stuffed before the "
        "clock starts (postroom deduplicates identical bytes). Latency = MAIL FROM written → "
        "250 after the dot read. Runs stop starting messages after the time bound; in-flight "
        "messages finish. MB = 10^6 bytes of raw message.",
        "- Each point: repeats × targets, the targets' order rotating every repeat; before each "
        "run the harness waits (≤ quiet-wait s) until the machine is under "
        f"{opts.get('quiet_pct', '15')} % of one core busy. Targets and generator run at "
        f"`nice {opts.get('nice')}`. Peak RSS = max of 0.1 s psutil samples over the target's "
        "process tree (for postroom until every message is terminal); CPU % = target CPU "
        "seconds ÷ load time (100 = one core); CPU ms/msg = the tree's CPU (reaped children "
        "included) from the load's start until it used under 0.1 core for 0.5 s after it, "
        "÷ messages accepted; bg CPU = all other CPU on the machine during the "
        "load, in % of one core (user+nice+system+irq+softirq of the VM minus target, "
        "generator and harness; hypervisor steal not counted); a run with bg above the limit "
        f"({opts.get('bg_limit')} %) is repeated once, unless the machine had not become quiet "
        "before it either.",
        "- Time to ready, downloads and the profile: see their sections.",
    ]
    return lines


def write_report(out_dir: Path, readme: Path) -> None:
    rows = load(out_dir / "smtp_runs.jsonl")
    downloads = load(out_dir / "download_runs.jsonl")
    meta_path = out_dir / "meta.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    rel = out_dir.relative_to(readme.parent) if out_dir.is_relative_to(readme.parent) else out_dir
    lines = [
        "# postroom SMTP benchmark",
        "",
        "postroom (SMTP in → durable raw message + row → 250 → extraction) measured against "
        "Postfix with its real durable queue (the best durable receiver, issue 24's peer to "
        "beat) and Postfix `smtp-sink` (no storage: the physical-limit reference) on the same "
        "machine in the same sitting, driven by the same generator. Generated by "
        f"`bench/report.py` from `{rel}/*.jsonl` — do not edit by hand; findings written by "
        f"people live in `{rel}/notes.md`.",
        "",
        "```sh",
        "bash bench/setup.sh    # postfix ('No configuration'), psutil, py-spy",
        "make bench             # the same as the full run below, then this report",
        "B=\".venv/bin/python -m bench.run_smtp_bench\"",
        "$B --quick                                # smoke test of everything, ~5 min",
        "$B --quick --workloads small --no-profile  # ~1.5 min",
        "$B                                        # full run, 25-35 min on 2 noisy cores",
        ".venv/bin/python -m bench.report          # re-render this file from results/",
        "```",
        "",
        "Single pieces by hand: `python -m bench.smtp_load --uvloop --port P --workload small "
        "-c 16 --max-seconds 8` (any loopback SMTP server), `python -m bench.sink_aiosmtpd "
        "--port P [--chunked]` (`--chunked`: postroom's DATA reader, nothing stored), "
        "`python -m bench.http_load --port P --key KEY --ids-file IDS -c 16`, "
        "`python -m bench.ab --src A,B --workload small -c 16` (two source trees, alternating; "
        "msgs/s and CPU ms per message), `python -m bench.fs_cost --dir /tmp` (what one "
        "message's files cost the kernel), `python -m bench.processes --src head,COMMIT "
        "--workload small` (CPU per message and idle/peak RSS of each of postroom's "
        "processes), `python -m bench.search_index` (what the search index costs a "
        "transaction). "
        "Options: `python -m bench.run_smtp_bench --help` (targets, workloads, concurrency, "
        "repeats, seconds, `--postroom-src head|COMMIT|worktree|DIR`, `--no-smtp/--no-download/"
        "--no-profile`).",
    ]
    lines += goals_section(rows, downloads)
    lines += ["", "## SMTP results", "",
              "Median (min–max) over the repeats. Time to ready: see below. CPU % is the "
              "target's (100 = one core), gen CPU % the generator's."]
    lines += smtp_section(rows)
    lines += ready_section(rows)
    lines += download_section(downloads)
    lines += profile_section(out_dir)
    lines += content_section(load(out_dir / "content.jsonl"))
    auto = findings_auto(rows, downloads)
    notes = out_dir / "notes.md"
    lines += ["", "## Findings", ""]
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    lines += ["Detected automatically in the raw records:", ""]
    lines += auto or ["- nothing: no SMTP errors, every queued message terminal, clean exits."]
    lines += method_section(meta)
    readme.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=BENCH / "results")
    ap.add_argument("--readme", type=Path)
    ap.add_argument("--profile-raw", type=Path,
                    help="re-summarise this py-spy raw file into <results>/profile_summary.json")
    a = ap.parse_args()
    readme = a.readme or (BENCH / "README.md" if a.results.resolve() == BENCH / "results"
                          else a.results / "README.md")
    if a.profile_raw:
        path = a.results / "profile_summary.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        summary = summarise_profile(a.profile_raw)
        summary["msgs_per_s_under_profiler"] = old.get("msgs_per_s_under_profiler", [])
        path.write_text(json.dumps(summary, indent=1))
    write_report(a.results.resolve(), readme.resolve())
    print(f"wrote {readme}")


if __name__ == "__main__":
    main()
