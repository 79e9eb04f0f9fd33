"""What the files of one small message cost the kernel, on the filesystem of a given folder.

postroom's local store keeps each message as SPEC §5's objects: `raw/<id>.eml`, and under a
folder of its own `inbound/<id>/0` (the attachment) and `inbound/<id>/body.txt`. This writes that
layout for `-n` messages the way `storage/local.py` does (a temp file written, then renamed into
place; no fsync: the store syncs the filesystem once per round), on one thread, and prints the
CPU it took per message, user and system apart. Nothing else runs: no SMTP, no database, no
parsing. It is the floor under postroom's cost per small message on that disk.

    python -m bench.fs_cost --dir /tmp -n 3000 [--after-delete 5000]

`--after-delete K` first creates and removes K files beside the run, as a benchmark that cleans
up between runs does: ext4 without a journal skips inodes freed in the last 30 s one at a time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

_ATTACHMENT = os.urandom(20_000)
_BODY = b"The small workload's text body.\r\n" * 4


def _put(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, folder / name)


def write_messages(root: Path, n: int) -> tuple[float, float, float]:
    """(user, system, wall) seconds per message for `n` messages' objects under `root`."""
    raw = root / "raw"
    inbound = root / "inbound"
    raw.mkdir(parents=True)
    inbound.mkdir()
    message = _BODY + _ATTACHMENT
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(n):
        mid = f"m{i:08d}"
        _put(raw, f"{mid}.eml", message)
        folder = inbound / mid
        folder.mkdir()
        _put(folder, "0", _ATTACHMENT)
        _put(folder, "body.txt", _BODY)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    return ((r1.ru_utime - r0.ru_utime) / n, (r1.ru_stime - r0.ru_stime) / n, (t1 - t0) / n)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where to write (its filesystem)")
    ap.add_argument("-n", type=int, default=3000, help="messages")
    ap.add_argument("--after-delete", type=int, default=0, metavar="K",
                    help="create and remove K files just before")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="postroom-fs-cost-", dir=args.dir))
    try:
        if args.after_delete:
            junk = base / "junk"
            junk.mkdir()
            for i in range(args.after_delete):
                (junk / f"f{i}").write_bytes(b"x")
            shutil.rmtree(junk)
        user, system, wall = write_messages(base / "store", args.n)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.n} messages (raw + folder + attachment + body) in {args.dir}: "
          f"user {user * 1e6:.0f} µs, system {system * 1e6:.0f} µs, wall {wall * 1e6:.0f} µs "
          f"per message; one core's ceiling {1 / (user + system):.0f} msgs/s")


if __name__ == "__main__":
    main()
