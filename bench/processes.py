"""CPU and memory of each of postroom's processes: the daemon, its extraction worker, its
sender-authentication worker, any content worker.

For each source tree (`--src`, alternating when there are several) postroom is started fresh
(bench/targets.py), its processes' RSS is read idle, then a fixed number of messages is sent
(`bench/smtp_load.py`) while every process's RSS is sampled every 50 ms; after the tree is quiet
again each process's CPU during the load is printed per message, with its peak RSS.

    python -m bench.processes --src head,674d4cf --workload small -n 4000 --repeats 2
    python -m bench.processes --src worktree --workload large -n 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.run_smtp_bench import postroom_source, wait_line
from bench.targets import REPO, TreeSampler, cleanup, start_postroom, wait_tree_quiet

CONFIG = "\n[auth]\nenabled = false\n"  # with --no-auth


def _role(proc: psutil.Process, root_pid: int) -> str:
    if proc.pid == root_pid:
        return "daemon"
    args = proc.cmdline()
    return args[2] if len(args) > 2 and args[1] == "-m" else " ".join(args)[:40]


def _by_role(root: psutil.Process) -> dict[str, tuple[float, int]]:
    """role → (CPU seconds, reaped children's included; RSS bytes), summed over processes."""
    out: dict[str, tuple[float, int]] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            t, rss = proc.cpu_times(), proc.memory_info().rss
            role = _role(proc, root.pid)
        except psutil.Error:
            continue
        cpu, mem = out.get(role, (0.0, 0))
        out[role] = (cpu + t.user + t.system + t.children_user + t.children_system, mem + rss)
    return out


def one(src: Path, label: str, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    run = start_postroom(root, 0, src, extra_config=CONFIG if args.no_auth else "")
    peaks: dict[str, int] = {}
    halt = threading.Event()

    def sample() -> None:
        daemon = psutil.Process(run.pid)
        while not halt.is_set():
            now = _by_role(daemon)
            for role, (_, rss) in now.items():
                peaks[role] = max(peaks.get(role, 0), rss)
            peaks["tree"] = max(peaks.get("tree", 0), sum(r for _, r in now.values()))
            halt.wait(0.05)

    try:
        load = [sys.executable, "-m", "bench.smtp_load", "--json", "--uvloop", "--port",
                str(run.smtp_port), *(["--workload", args.workload] if args.workload != "plain"
                                      else ["-k", "0", "--pool", "512"]),
                "-n", str(args.n), "-c", str(args.concurrency), "--max-seconds", "600",
                "--grace", "60", "--wait-go", "--ids-out", str(root / "ids.tsv")]
        gen = subprocess.Popen(load, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        assert gen.stdin is not None and gen.stdout is not None
        if wait_line(gen.stdout, 300).strip() != "READY":
            raise RuntimeError(f"generator did not get ready: {gen.communicate()[1][-2000:]}")
        time.sleep(1.0)
        daemon = psutil.Process(run.pid)
        idle = _by_role(daemon)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        gen.stdin.write("go\n")
        gen.stdin.flush()
        out, err = gen.communicate(timeout=900)
        if gen.returncode != 0:
            raise RuntimeError(f"generator failed: {err[-2000:]}")
        wait_tree_quiet(TreeSampler(run.pid), 30.0)
        after = _by_role(daemon)
        halt.set()
        sampler.join()
        res = json.loads(out.strip().splitlines()[-1])
        ok = max(int(res["ok"]), 1)
        return {"src": label, "msgs_per_s": res["msgs_per_s"], "ok": ok, "processes": {
            role: {"cpu_ms_per_msg": 1e3 * (after[role][0] - idle.get(role, (0.0, 0))[0]) / ok,
                   "idle_rss_mib": idle.get(role, (0.0, 0))[1] / 2**20,
                   "peak_rss_mib": peaks.get(role, 0) / 2**20} for role in after},
            "peak_tree_rss_mib": peaks.get("tree", 0) / 2**20}
    finally:
        run.stop()
        cleanup(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default="head",
                    help="comma-separated: head, a commit, worktree or a folder (default head)")
    ap.add_argument("--workload", default="small", help="plain, small, medium or large")
    ap.add_argument("-n", type=int, default=3000, help="messages a run (default 3000)")
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-auth", action="store_true", help="[auth] enabled = false")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-processes-src-") as tmp:
        sources = [postroom_source(spec, Path(tmp) / str(i))[:2]
                   for i, spec in enumerate(args.src.split(","))]
        for _ in range(args.repeats):
            for src, label in sources:
                r = one(src, label, args)
                print(f"{r['src']}: {r['msgs_per_s']:.0f} msgs/s, tree peak "
                      f"{r['peak_tree_rss_mib']:.0f} MiB", flush=True)
                for role, v in sorted(r["processes"].items()):
                    print(f"  {role:28s} {v['cpu_ms_per_msg']:6.2f} CPU ms/msg  idle "
                          f"{v['idle_rss_mib']:4.0f} MiB  peak {v['peak_rss_mib']:4.0f} MiB",
                          flush=True)


if __name__ == "__main__":
    main()
