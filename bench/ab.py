"""A/B of postroom builds: the same load against each source tree in turn, alternating order.

    .venv/bin/python -m bench.ab --src /tmp/before,/tmp/after --workload small -c 16 --repeats 3

Each source is a folder holding `daemon/`, `storage/` and `extractors/` (e.g. `git archive REV`
unpacked); every run starts a fresh postroom (embedded default, temp dir) from it, drives it with
`bench.smtp_load` for `--seconds`, and stops it. Prints each run's msgs/s and MB/s and the medians.
This is how notes.md item 11's step-by-step numbers were taken; `make bench` is the reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import targets


def run_once(src: Path, workload: str, concurrency: int, seconds: float,
             extra_config: str = "") -> tuple[float, float, float]:
    """(msgs/s, MB/s, CPU ms of postroom's process tree per accepted message) of one load
    against a fresh postroom started from `src`, with `extra_config` appended to its config."""
    root = Path(tempfile.mkdtemp(prefix="postroom-ab-"))
    run = targets.start_postroom(root, 0, src, extra_config=extra_config)
    try:
        sampler = targets.TreeSampler(run.pid)
        cpu0 = sampler.cpu_s()
        out = subprocess.run(
            [sys.executable, "-m", "bench.smtp_load", "--uvloop", "--port", str(run.smtp_port),
             "--workload", workload, "-c", str(concurrency), "--max-seconds", str(seconds),
             "--json"],
            capture_output=True, text=True, cwd=targets.REPO, check=True).stdout
        cpu = sampler.cpu_s() - cpu0
    finally:
        run.stop()
        targets.cleanup(run)
    res = json.loads(out.strip().splitlines()[-1])
    return res["msgs_per_s"], res["mb_per_s"], 1000 * cpu / max(res["ok"], 1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="comma-separated source folders")
    p.add_argument("--workload", default="small", choices=("small", "medium", "large"))
    p.add_argument("-c", "--concurrency", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--config", action="append", default=[], metavar="TOML",
                   help="TOML appended to every run's config, e.g. '[pipeline]\\nmax_lag = 0'")
    args = p.parse_args(argv)
    extra = "".join("\n" + c.replace("\\n", "\n") + "\n" for c in args.config)
    sources = [Path(s).resolve() for s in args.src.split(",")]
    rates: dict[Path, list[tuple[float, float, float]]] = {s: [] for s in sources}
    for r in range(args.repeats):
        for src in sources if r % 2 == 0 else sources[::-1]:
            msgs, mb, cpu_ms = run_once(src, args.workload, args.concurrency, args.seconds, extra)
            rates[src].append((msgs, mb, cpu_ms))
            print(f"{src}  {args.workload} c={args.concurrency}  {msgs:.1f} msgs/s  "
                  f"{mb:.1f} MB/s  {cpu_ms:.2f} CPU ms/msg", flush=True)
    for src, values in rates.items():
        print(f"{src}  median {statistics.median(v[0] for v in values):.1f} msgs/s  "
              f"{statistics.median(v[1] for v in values):.1f} MB/s  "
              f"{statistics.median(v[2] for v in values):.2f} CPU ms/msg  ({len(values)} runs)")


if __name__ == "__main__":
    main()
