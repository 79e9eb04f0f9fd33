"""The verifier process: `python -m daemon.sender_auth.worker <parent pid>`.

Verification is CPU in Python (dkimpy's hashing, pyspf's parsing) and waits on DNS. In the
daemon's process its threads took the GIL from the event loop, which then waited milliseconds
for it at every hop: accepted mail fell to a third. Here it runs beside the daemon instead, as
the extraction workers do, on a core of its own, at a lower CPU priority (`auth.nice`): a verdict
may come late, a 250 may not (`daemon.pipeline.verification`).

The first frame on stdin is the `Settings`; each later one is `(tag, (source, client_ip, helo,
mail_from))`, answered on stdout as `(tag, (ok, Authentication | exception))` by one of
`settings.concurrency` threads, in the order they finish: a message whose sender's DNS is slow
holds one thread, never the others. One `Verifier` holds the process's DNS cache. The frames are
the extraction workers' (`daemon.extract_worker`); the process dies with the daemon.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from daemon.extract_worker import die_with_parent, read_frame, write_frame
from daemon.sender_auth.dmarc_check import org_domain
from daemon.sender_auth.records import Settings
from daemon.sender_auth.service import Verifier


def main() -> int:
    die_with_parent(int(sys.argv[1]))
    # systemd's SIGTERM reaches the whole unit at once: the daemon drains, and its verifier
    # must keep answering meanwhile. It ends when the daemon closes its stdin (or dies).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the daemon on stdout
    try:
        settings: Settings = read_frame(stdin)
    except EOFError:
        return 0
    os.nice(settings.nice)  # below the daemon and the extraction workers: mail comes first
    verifier = Verifier(settings)
    org_domain("postroom.invalid")  # loads the public suffix list before the first message
    replies = threading.Lock()

    def answer(tag: int, args: tuple[Any, ...]) -> None:
        try:
            result: tuple[bool, Any] = (True, verifier.verify(*args))
        except Exception as e:  # verify never raises; reading the source can
            result = (False, e)
        with replies:
            write_frame(stdout, (tag, result))

    threads = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="verify")
    while True:
        try:
            tag, args = read_frame(stdin)
        except EOFError:
            threads.shutdown(wait=False, cancel_futures=True)
            return 0
        threads.submit(answer, tag, args)


if __name__ == "__main__":
    # Run the imported module, not this `__main__` copy (as daemon.extract_worker does).
    from daemon.sender_auth.worker import main as worker_main

    sys.exit(worker_main())
