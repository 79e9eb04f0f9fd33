"""A/B of postroom builds on the HTTP API: download URLs and status reads, alternating trees.

    .venv/bin/python -m bench.ab_http --src /tmp/before,/tmp/after --repeats 3

Each run starts a fresh postroom from one source folder (as `bench.ab`), seeds it with 256 small
messages, waits until they are ready, then drives `POST …/attachments/0/download` and
`GET …/attachments/0` at c=16 for `--seconds` each with `bench.http_load`. Prints req/s per run
and the medians. This is how notes.md item 13's API numbers were taken.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench import run_smtp_bench as b
from bench.targets import cleanup, start_target

STATUS_PATH = "/v1/messages/{id}/attachments/0"


def run_once(src: Path, seconds: float) -> tuple[float, float]:
    """(download req/s, status req/s) of one fresh postroom from `src`."""
    opts = b.Options(targets=["postroom"], workloads=["small"], concurrency=[16], repeats=1,
                     seconds=60.0, grace=5, quiet_wait=0.0, quiet_pct=30, bg_limit=100,
                     ready_timeout=60, download_seconds=seconds, download_repeats=1,
                     profile_seconds=5, nice=0, out=Path("/tmp"), readme=Path("/dev/null"),
                     src=src, quick=True)
    run = start_target("postroom", 0, src)
    try:
        ids = run.root / "ids.tsv"
        seeded, _ = b.drive(run, "small", 4, opts, ids, extra=("-n", "256"))
        b.time_to_ready(run, seeded, ids, 60)
        download = float(b.http_run(run, ids, opts, b.DOWNLOAD_PATH, "POST")["req_per_s"])
        status = float(b.http_run(run, ids, opts, STATUS_PATH, "GET")["req_per_s"])
        return download, status
    finally:
        run.stop()
        cleanup(run)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--src", required=True, help="comma-separated source folders")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    sources = [Path(s).resolve() for s in args.src.split(",")]
    rates: dict[Path, list[tuple[float, float]]] = {s: [] for s in sources}
    for rep in range(args.repeats):
        for src in sources if rep % 2 == 0 else sources[::-1]:
            rates[src].append(run_once(src, args.seconds))
            print(f"{src}  download {rates[src][-1][0]:.0f} req/s  "
                  f"status {rates[src][-1][1]:.0f} req/s", flush=True)
    for src, got in rates.items():
        print(f"{src}  median download {statistics.median(d for d, _ in got):.0f} req/s  "
              f"status {statistics.median(s for _, s in got):.0f} req/s  ({len(got)} runs)")


if __name__ == "__main__":
    main()
