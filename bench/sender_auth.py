"""What sender authentication costs (issue 20 item 7): CPU per message of `verify` with a warm
DNS cache, and postroom's accepted msgs/s with `[auth] enabled` on against off, alternating.

    .venv/bin/python -m bench.sender_auth                          # both parts, ~4 min
    .venv/bin/python -m bench.sender_auth --no-macro -n 20 --out /tmp/sa.jsonl   # smoke test

DNS is a loopback dnslib server in this process (tests/dnsserver.py) holding SPF, DKIM and DMARC
records for the load generator's domain; messages are the generator's small workload, signed
before the clock starts. Only loopback is ever measured; nothing here changes the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import smtp_load
from bench.targets import (
    REPO,
    Running,
    TreeSampler,
    append_record,
    busy_cpu_s,
    cleanup,
    nice_prefix,
    start_postroom,
    steal_cpu_s,
    tool_versions,
    wait_quiet,
)
from daemon.sender_auth import Authentication, Resolver, verify
from tests.dnsserver import RunningDns, Zone, start_dns
from tests.sender_auth.mail import Key, arc_seal, ed25519_key, rsa_key, sign

DOMAIN = smtp_load.SENDER.split("@")[1]  # sender.test: the generator's MAIL FROM and From
HELO = "loadgen.bench.test"  # what smtp_load says in EHLO
FORWARDER = "forwarder.test"
AUTHSERV_ID = "postroom.bench.test"  # bench/targets.py's smtp.hostname, the default authserv-id
RESULTS = Path(__file__).resolve().parent / "results" / "sender_auth.jsonl"


@dataclass(frozen=True)
class Keys:
    rsa: Key  # 2048 bits, the sender's
    ed: Key  # the sender's second signature
    forwarder: Key  # 2048 bits, the mailing list's ARC seal


def zone_records(keys: Keys) -> dict[str, dict[str, Any]]:
    """Everything right for mail from 127.0.0.1 as the load generator sends it (and from
    127.0.0.9 for the forwarder)."""
    local, forwarder = "v=spf1 ip4:127.0.0.1 -all", "v=spf1 ip4:127.0.0.9 -all"
    return {
        DOMAIN: {"TXT": [local]},
        HELO: {"TXT": [local]},
        f"_dmarc.{DOMAIN}": {"TXT": ["v=DMARC1; p=reject"]},
        f"s2048._domainkey.{DOMAIN}": {"TXT": [keys.rsa.record]},
        f"ed._domainkey.{DOMAIN}": {"TXT": [keys.ed.record]},
        FORWARDER: {"TXT": [forwarder]},
        f"lists.{FORWARDER}": {"TXT": [forwarder]},
        f"arc._domainkey.{FORWARDER}": {"TXT": [keys.forwarder.record]},
    }


def small_body(index: int) -> bytes:
    """One message of the generator's small workload (≈28.9 kB, From load@sender.test)."""
    w = smtp_load.WORKLOADS["small"]
    return smtp_load.build_body(index, w.attachments, w.attachment_size)


def signed_rsa(raw: bytes, keys: Keys) -> bytes:
    return sign(raw, keys.rsa, "s2048", DOMAIN)


def forwarded(raw: bytes, keys: Keys) -> bytes:
    """`raw`, signed, through a mailing list that checks it, tags the subject, adds a footer
    (breaking the DKIM signature) and seals the result with ARC."""
    received = (f"Authentication-Results: {FORWARDER}; dkim=pass header.d={DOMAIN};"
                f" spf=pass smtp.mailfrom={DOMAIN}; dmarc=pass header.from={DOMAIN}\r\n"
                ).encode() + signed_rsa(raw, keys)
    modified = received.replace(b"Subject: bench", b"Subject: [list] bench", 1)
    return arc_seal(modified + b"-- \r\nlist footer\r\n", keys.forwarder, "arc", FORWARDER)


@dataclass(frozen=True)
class Case:
    """One message and the envelope it arrives with."""

    name: str
    raw: bytes
    client_ip: str = "127.0.0.1"
    helo: str = HELO
    mail_from: str = smtp_load.SENDER

    def check(self, resolver: Resolver) -> Authentication:
        return verify(self.raw, client_ip=self.client_ip, helo=self.helo,
                      mail_from=self.mail_from, authserv_id=AUTHSERV_ID, resolver=resolver)


def cases(keys: Keys) -> list[Case]:
    raw = small_body(0)
    return [
        Case("unsigned", raw),
        Case("rsa2048+spf+dmarc", signed_rsa(raw, keys)),
        Case("rsa2048+ed25519", sign(signed_rsa(raw, keys), keys.ed, "ed", DOMAIN)),
        Case("arc-forwarded", forwarded(raw, keys), client_ip="127.0.0.9",
             helo=f"lists.{FORWARDER}", mail_from=f"list@{FORWARDER}"),
    ]


def summary(auth: Authentication) -> str:
    """The results in one line, to show what was measured."""
    dkim = ",".join(d.result for d in auth.dkim) or "-"
    return (f"spf={auth.spf.result} dkim={dkim} dmarc={auth.dmarc.result} "
            f"arc={auth.arc.result} verdict={auth.verdict}")


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: dict[str, float] | None, digits: int = 2) -> str:
    if s is None:
        return "–"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


# --------------------------------------------------------------------------- micro

def cold_check(case: Case, dns: RunningDns) -> dict[str, Any]:
    """One verification with an empty DNS cache: CPU of the process (the DNS server answering
    in its threads included), of the verifying thread alone, wall time, and the queries."""
    resolver = Resolver([dns.address], 2.0)
    dns.zone.reset_counts()
    p0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
    auth = case.check(resolver)
    p1, t1, w1 = time.process_time(), time.thread_time(), time.perf_counter()
    seen, protocols = dict(dns.zone.seen), dict(dns.zone.protocols)  # the server is idle now
    return {"cpu_ms": (p1 - p0) * 1e3, "thread_cpu_ms": (t1 - t0) * 1e3,
            "wall_ms": (w1 - w0) * 1e3, "result": summary(auth),
            "queries": sorted(f"{name} {qtype}" for (name, qtype), n in seen.items()
                              for _ in range(n)),
            "protocols": protocols}


def warm_cpu_ms(fn: Callable[[], object], n: int, repeats: int) -> list[float]:
    """CPU ms per call of `fn` (process time over `n` calls), once per repeat."""
    out = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        out.append((time.process_time() - t0) * 1e3 / n)
    return out


def where_cpu_goes(fn: Callable[[], object], n: int) -> list[tuple[str, float]]:
    """Share of own time (cProfile's tottime) per library, over `n` calls of `fn`: where a
    warm verification's CPU goes. cProfile slows Python code more than C, so roughly."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    groups: dict[str, float] = {}
    for entry in prof.getstats():
        code = entry.code
        group = code_group("~", code) if isinstance(code, str) else code_group(code.co_filename,
                                                                            code.co_name)
        groups[group] = groups.get(group, 0.0) + entry.inlinetime
    total = sum(groups.values()) or 1.0
    top = sorted(groups.items(), key=lambda item: -item[1])[:10]
    return [(g, 100 * t / total) for g, t in top]


def code_group(filename: str, func: str) -> str:
    """`dkim`, `spf`, `dns`, `daemon/sender_auth/verify.py`, `stdlib email`, `C: <func>` …"""
    if filename == "~":  # C functions: name them, they are few and telling
        method = re.fullmatch(r"<method '(\w+)' of '([\w.]+)' objects>", func)
        if method:
            return f"C: {method.group(2)}.{method.group(1)}"
        return "C: " + re.sub(r"^<(built-in method |built-in function )?|>$", "", func)
    if "site-packages/" in filename:
        top = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        return top.removesuffix(".py")
    if "/daemon/" in filename:
        return "daemon/" + filename.split("/daemon/", 1)[1]
    match = re.search(r"/python3\.\d+/([^/]+)", filename)
    return f"stdlib {match.group(1).removesuffix('.py')}" if match else filename


def micro(dns: RunningDns, keys: Keys, n: int, repeats: int, cold_repeats: int
          ) -> dict[str, Any]:
    """Per case: warm CPU ms per message (median of `repeats` × `n` calls) and the cold first
    message; the very first verification in the process (lazy loads included) separately."""
    all_cases = cases(keys)
    common = all_cases[1]
    first = cold_check(common, dns)  # before any other: imports and tables load lazily
    out: dict[str, Any] = {"n": n, "repeats": repeats, "cold_repeats": cold_repeats,
                           "message_bytes": len(common.raw), "first_in_process": first,
                           "cases": {}}
    for case in all_cases:
        colds = [cold_check(case, dns) for _ in range(cold_repeats)]
        resolver = Resolver([dns.address], 2.0)
        for _ in range(3):  # fill the cache
            case.check(resolver)
        dns.zone.reset_counts()
        warm = warm_cpu_ms(functools.partial(case.check, resolver), n, repeats)
        out["cases"][case.name] = {
            "message_bytes": len(case.raw), "result": colds[0]["result"],
            "warm_cpu_ms": spread(warm), "warm_runs": warm,
            "warm_queries": dns.zone.count(),  # must be 0: every answer from the cache
            "cold_cpu_ms": spread([c["cpu_ms"] for c in colds]),
            "cold_thread_cpu_ms": spread([c["thread_cpu_ms"] for c in colds]),
            "cold_wall_ms": spread([c["wall_ms"] for c in colds]),
            "cold_queries": colds[0]["queries"], "cold_protocols": colds[0]["protocols"]}
    resolver = Resolver([dns.address], 2.0)
    common.check(resolver)
    out["profile_case"] = common.name
    out["profile"] = where_cpu_goes(lambda: common.check(resolver), max(n, 50))
    return out


def print_micro(m: dict[str, Any]) -> None:
    print(f"\nverify() CPU ms per message, {m['message_bytes']} B small message, warm cache: "
          f"median (min–max) of {m['repeats']} × {m['n']}; cold: fresh cache, "
          f"{m['cold_repeats']} runs")
    print(f"{'case':20} {'warm CPU ms':>20} {'cold CPU ms':>20} {'cold thread ms':>20} "
          f"{'cold wall ms':>8} {'queries':>7}  results")
    for name, c in m["cases"].items():
        proto = "/".join(f"{k} {v}" for k, v in sorted(c["cold_protocols"].items()))
        print(f"{name:20} {fmt(c['warm_cpu_ms']):>20} {fmt(c['cold_cpu_ms']):>20} "
              f"{fmt(c['cold_thread_cpu_ms']):>20} {c['cold_wall_ms']['median']:>12.1f} "
              f"{len(c['cold_queries']):>3} ({proto})  {c['result']}")
        if c["warm_queries"]:
            print(f"  !! {c['warm_queries']} DNS queries with a warm cache")
    f = m["first_in_process"]
    print(f"first verification in the process ({m['profile_case']}): {f['cpu_ms']:.1f} CPU ms, "
          f"{f['thread_cpu_ms']:.1f} on its thread, {f['wall_ms']:.1f} ms wall, "
          f"{len(f['queries'])} queries: {', '.join(f['queries'])}")
    print(f"where a warm {m['profile_case']} verification's CPU goes (cProfile own time): "
          + ", ".join(f"{g} {p:.0f}%" for g, p in m["profile"][:8]))


# --------------------------------------------------------------------------- macro

def write_bodies(keys: Keys, count: int, folder: Path) -> None:
    """The generator's small bodies, each DKIM-signed (rsa-2048) as `NNNN.eml`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{i:04d}.eml").write_bytes(signed_rsa(small_body(i), keys))


def load_main(argv: list[str]) -> None:
    """`python -m bench.sender_auth load --bodies DIR SMTP_LOAD_ARGS…`: bench.smtp_load sending
    the messages in DIR (its `X-Bench-Seq` line on top of each, outside the signature)."""
    p = argparse.ArgumentParser(prog="bench.sender_auth load")
    p.add_argument("--bodies", type=Path, required=True)
    ours, rest = p.parse_known_args(argv)
    raws = [path.read_bytes() for path in sorted(ours.bodies.glob("*.eml"))]
    if not raws:
        sys.exit(f"no *.eml in {ours.bodies}")

    def signed_plan(args: argparse.Namespace) -> tuple[list[bytes], list[int], list[bytes]]:
        headers = smtp_load.seq_headers(args.n, args.nonce)
        return [smtp_load.dot_stuff(r) for r in raws], [len(r) for r in raws], headers

    # smtp_load builds its own bodies and takes no given ones; this process swaps its builder
    # rather than copy its client (this bench may not change smtp_load).
    smtp_load.build_plan = signed_plan
    smtp_load.main(rest)


def auth_config(on: bool, dns: RunningDns) -> str:
    if on:
        return f'\n[auth]\nenabled = true\ndns_servers = ["{dns.address}"]\n'
    return "\n[auth]\nenabled = false\n"


async def newest_terminal(run: Running, message_id: str, limit_s: float) -> bool:
    """Poll one message (every 50 ms, the job queue is FIFO: about the last to finish) until
    it is terminal; the cheap moment at which the backlog is drained."""
    import httpx
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(base_url=run.http_url, timeout=10, headers={
            "Authorization": f"Bearer {run.api_key}"}) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                r = await http.get(f"/v1/messages/{message_id}")
                if r.status_code == 200 and r.json()["status"] in ("ready", "partial", "failed"):
                    return True
            await asyncio.sleep(0.05)
    return False


async def verdict_sample(run: Running, ids: list[str], count: int = 16) -> dict[str, int]:
    """The verdicts of `count` messages spread over the run."""
    import httpx
    step = max(1, len(ids) // count)
    got: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=run.http_url, timeout=10, headers={
            "Authorization": f"Bearer {run.api_key}"}) as http:
        for mid in ids[::step][:count]:
            r = await http.get(f"/v1/messages/{mid}")
            got[str(r.json().get("verdict")) if r.status_code == 200 else str(r.status_code)] += 1
    return dict(got)


def cpu_by_process(sampler: TreeSampler) -> dict[str, float]:
    """CPU seconds of each process of the tree, by what it runs (`-m daemon serve` is the
    daemon, `daemon.extract_worker` an extraction worker, `daemon.sender_auth.worker` the
    verifier)."""
    import psutil
    out: dict[str, float] = {}
    for proc in sampler.tree():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cmd = proc.cmdline()
            name = cmd[cmd.index("-m") + 1] if "-m" in cmd[:-1] else Path(cmd[0]).name
            t = proc.cpu_times()
            out[name] = out.get(name, 0.0) + t.user + t.system
    return out


def macro_run(on: bool, rep: int, position: int, src: Path, dns: RunningDns, bodies: Path,
              args: argparse.Namespace) -> dict[str, Any]:
    """One fresh postroom, auth on or off, under the small load; CPU of its process tree per
    accepted message during the load and until the backlog is drained, and 250→ready."""
    from bench.run_smtp_bench import read_ids, time_to_ready
    root = Path(tempfile.mkdtemp(prefix="postroom-auth-"))
    run = start_postroom(root, args.nice, src, extra_config=auth_config(on, dns))
    record: dict[str, Any] = {"kind": "sender_auth_macro", "auth": "on" if on else "off",
                              "rep": rep, "position": position}
    try:
        ids_file = root / "ids.tsv"
        cmd = [*nice_prefix(args.nice), sys.executable, "-m", "bench.sender_auth", "load",
               "--bodies", str(bodies), "--json", "--uvloop", "--port", str(run.smtp_port),
               "--workload", "small", "-c", str(args.concurrency),
               "--max-seconds", str(args.seconds), "--ids-out", str(ids_file),
               "--rate", str(args.rate)]
        record["quiet_waited_s"], record["quiet_last_pct"] = wait_quiet(args.quiet_wait, 15.0)
        dns.zone.reset_counts()
        sampler = TreeSampler(run.pid)
        cpu0, busy0, steal0, w0 = sampler.cpu_s(), busy_cpu_s(), steal_cpu_s(), time.monotonic()
        by0 = cpu_by_process(sampler)
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True).stdout
        cpu_load, wall = sampler.cpu_s() - cpu0, time.monotonic() - w0
        by1 = cpu_by_process(sampler)
        busy, steal = busy_cpu_s() - busy0, steal_cpu_s() - steal0
        res = json.loads(out.strip().splitlines()[-1])
        queued = read_ids(ids_file)
        drained = bool(queued) and asyncio.run(newest_terminal(run, queued[-1][0], 120))
        cpu_drained = sampler.cpu_s() - cpu0
        ok = max(res["ok"], 1)
        record.update(
            {k: res[k] for k in ("msgs_per_s", "mb_per_s", "ok", "errors", "errors_by_code",
                                 "error_samples", "p50_ms", "p99_ms", "elapsed_s", "rate",
                                 "late_p50_ms", "late_p99_ms",
                                 "message_bytes", "pool", "client_cpu_s")},
            cpu_ms_load=1e3 * cpu_load / ok, cpu_ms_drained=1e3 * cpu_drained / ok,
            drained=drained, target_cpu_pct=100 * cpu_load / res["elapsed_s"],
            bg_cpu_pct=100 * max(0.0, busy - cpu_load - res["client_cpu_s"]) / wall,
            steal_pct=100 * steal / wall, dns_queries=dns.zone.count(),
            cpu_ms_by_process={k: 1e3 * (v - by0.get(k, 0.0)) / ok for k, v in by1.items()})
        ready = time_to_ready(run, res, ids_file, 180)
        record["ready"] = {k: ready[k] for k in (
            "queued", "terminal", "never_terminal", "statuses", "errors", "time_to_ready_s",
            "ready_after_250_p50_ms", "ready_after_250_p99_ms",
            "received_to_processed_p50_ms")}
        record["verdicts"] = asyncio.run(verdict_sample(run, [mid for mid, _ in queued]))
    finally:
        record["exit_code"] = run.stop()
        if record.get("errors") or record["exit_code"] not in (0, -15, None):
            record["log_tail"] = run.log_tail(20)
        cleanup(run)
    return record


def macro_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per side, and the on ÷ off ratio and on − off difference paired by repeat."""
    by = {side: [r for r in runs if r["auth"] == side] for side in ("on", "off")}

    def med(side: str, key: str) -> dict[str, float] | None:
        values = [r[key] for r in by[side] if r.get(key) is not None]
        return spread(values) if values else None

    def ready_p50(side: str) -> dict[str, float] | None:
        values = [r["ready"]["ready_after_250_p50_ms"] for r in by[side]
                  if r.get("ready", {}).get("ready_after_250_p50_ms") is not None]
        return spread(values) if values else None

    pairs = [(on, off) for on in by["on"] for off in by["off"] if on["rep"] == off["rep"]]
    out: dict[str, Any] = {side: {"msgs_per_s": med(side, "msgs_per_s"),
                                  "cpu_ms_load": med(side, "cpu_ms_load"),
                                  "cpu_ms_drained": med(side, "cpu_ms_drained"),
                                  "ready_after_250_p50_ms": ready_p50(side),
                                  "smtp_p50_ms": med(side, "p50_ms"),
                                  "smtp_p99_ms": med(side, "p99_ms"),
                                  "runs": len(by[side])} for side in ("on", "off")}
    if pairs:
        out["msgs_ratio_on_off"] = spread([a["msgs_per_s"] / b["msgs_per_s"] for a, b in pairs])
        out["cpu_ms_load_diff"] = spread([a["cpu_ms_load"] - b["cpu_ms_load"] for a, b in pairs])
        out["cpu_ms_drained_diff"] = spread([a["cpu_ms_drained"] - b["cpu_ms_drained"]
                                             for a, b in pairs])
    return out


def print_macro(runs: list[dict[str, Any]], s: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\npostroom small c={args.concurrency}, {args.seconds:g} s per run, auth on/off "
          f"alternating; median (min–max) of {s['on']['runs']}/{s['off']['runs']} runs")
    print(f"{'auth':5} {'msgs/s':>22} {'CPU ms/msg (load)':>22} {'CPU ms/msg (drained)':>22} "
          f"{'250→ready p50 ms':>22} {'MAIL→250 p50 ms':>22} {'MAIL→250 p99 ms':>22}")
    for side in ("on", "off"):
        v = s[side]
        print(f"{side:5} {fmt(v['msgs_per_s'], 1):>22} {fmt(v['cpu_ms_load']):>22} "
              f"{fmt(v['cpu_ms_drained']):>22} {fmt(v['ready_after_250_p50_ms'], 1):>22} "
              f"{fmt(v['smtp_p50_ms'], 1):>22} {fmt(v['smtp_p99_ms'], 1):>22}")
    if "msgs_ratio_on_off" in s:
        print(f"paired by repeat: msgs/s on ÷ off {fmt(s['msgs_ratio_on_off'], 3)}; "
              f"CPU ms/msg on − off {fmt(s['cpu_ms_load_diff'])} during the load, "
              f"{fmt(s['cpu_ms_drained_diff'])} until drained")
    for r in runs:
        if r.get("errors") or r["ready"]["never_terminal"] or not r["drained"]:
            print(f"  !! run {r['rep']} auth {r['auth']}: {r.get('errors')} SMTP errors, "
                  f"{r['ready']['never_terminal']} never terminal, drained {r['drained']}")


# --------------------------------------------------------------------------- main

def versions() -> dict[str, Any]:
    from importlib import metadata
    out = tool_versions()
    for pkg in ("dkimpy", "pyspf", "dnspython", "authres", "publicsuffixlist", "pynacl",
                "dnslib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("-n", type=int, default=200, help="micro: verifications per repeat")
    p.add_argument("--micro-repeats", type=int, default=7)
    p.add_argument("--cold-repeats", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="macro: runs per side")
    p.add_argument("--seconds", type=float, default=8.0, help="macro: load time per run")
    p.add_argument("-c", "--concurrency", type=int, default=16)
    p.add_argument("--rate", type=float, default=0.0,
                   help="macro: offer this many msgs/s (open loop); 0 saturates (closed loop)")
    p.add_argument("--pool", type=int, default=smtp_load.WORKLOADS["small"].pool,
                   help="macro: distinct signed bodies (the small workload's pool)")
    p.add_argument("--quiet-wait", type=float, default=10.0,
                   help="macro: seconds to wait for an idle machine before each run")
    p.add_argument("--nice", type=int, default=-10,
                   help="nice level of postroom and the generator (negative needs root)")
    p.add_argument("--postroom-src", default="head",
                   help="'head' (git archive of HEAD), a commit, 'worktree', or a folder")
    p.add_argument("--no-micro", action="store_true")
    p.add_argument("--no-macro", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON lines file to append to")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        load_main(argv[1:])
        return
    args = parse_args(argv)
    from bench.run_smtp_bench import git_state, machine_info, postroom_source
    record: dict[str, Any] = {
        "kind": "sender_auth", "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join([".venv/bin/python -m bench.sender_auth", *argv]),
        "git": git_state(), "machine": machine_info(), "versions": versions()}
    keys = Keys(rsa_key(2048), ed25519_key(), rsa_key(2048))
    dns = start_dns(Zone(zone_records(keys)))
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        try:
            if not args.no_micro:
                record["micro"] = micro(dns, keys, args.n, args.micro_repeats,
                                        args.cold_repeats)
                print_micro(record["micro"])
            if not args.no_macro:
                src, source, commit = postroom_source(args.postroom_src, Path(tmp) / "src")
                record.update(postroom_source=source, commit=commit)
                bodies = Path(tmp) / "bodies"
                write_bodies(keys, args.pool, bodies)
                runs: list[dict[str, Any]] = []
                for rep in range(args.repeats):
                    for position, on in enumerate((True, False) if rep % 2 == 0
                                                  else (False, True)):
                        runs.append(macro_run(on, rep, position, src, dns, bodies, args))
                        r = runs[-1]
                        print(f"rep {rep} auth {r['auth']:3}  {r['msgs_per_s']:7.1f} msgs/s  "
                              f"250 p50/p99 {r['p50_ms']:.1f}/{r['p99_ms']:.1f} ms  "
                              f"late p99 {r['late_p99_ms'] or 0:.0f} ms  "
                              f"{r['cpu_ms_load']:.2f} CPU ms/msg (load), "
                              f"{r['cpu_ms_drained']:.2f} (drained)  250→ready p50 "
                              f"{r['ready']['ready_after_250_p50_ms'] or float('nan'):.1f} ms  "
                              f"verdicts {r['verdicts']}  DNS queries {r['dns_queries']}  "
                              f"bg {r['bg_cpu_pct']:.0f}%  steal {r['steal_pct']:.0f}%  "
                              "CPU ms/msg " + ", ".join(
                                  f"{k} {v:.2f}" for k, v in r["cpu_ms_by_process"].items()),
                              flush=True)
                record["macro"] = {"workload": "small", "concurrency": args.concurrency,
                                   "rate": args.rate or None,
                                   "seconds": args.seconds, "pool": args.pool,
                                   "summary": macro_summary(runs), "runs": runs}
                print_macro(runs, record["macro"]["summary"], args)
        finally:
            dns.stop()
    record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    append_record(args.out, record)
    print(f"\nappended to {args.out}")


if __name__ == "__main__":
    main()
