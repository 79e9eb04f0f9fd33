"""The sd_notify datagrams, read from a real socket as systemd would."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from daemon.ops.systemd import SystemdNotifier as Notifier


def test_datagrams_reach_the_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000",
                      "WATCHDOG_PID": str(os.getpid())})
        assert n.enabled and n.watchdog_interval == 2.0
        n.send("READY=1", "STATUS=ok")
        assert server.recv(4096) == b"READY=1\nSTATUS=ok"


def test_without_systemd_nothing_is_sent_and_no_watchdog() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    n.send("READY=1")  # must not raise
    assert Notifier({"WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"}).watchdog_interval is None
