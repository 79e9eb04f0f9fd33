"""systemd's notify protocol: one datagram per state change to `$NOTIFY_SOCKET`.

A no-op outside systemd. `WATCHDOG=1` is sent at half the interval systemd asks for, and only
from the event loop, so a stuck loop stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping


class SystemdNotifier:
    """Sends READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 when systemd is listening."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if address.startswith("@"):
            self._address = "\0" + address[1:]  # abstract namespace
        elif address.startswith("/"):
            self._address = address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2_000_000

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        """Send `KEY=value` lines; errors are ignored (systemd may be gone during shutdown)."""
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(fields).encode("utf-8"))
        except OSError:
            pass

    async def watchdog(self) -> None:
        """Ping the watchdog for as long as the loop runs this task."""
        if self.watchdog_interval is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)

    async def status(self, describe: Callable[[], str], every: float = 10.0) -> None:
        """Send `STATUS=<describe()>` every `every` seconds (what `systemctl status` shows)."""
        if not self.enabled:
            return
        while True:
            await asyncio.sleep(every)
            self.send(f"STATUS={describe()}")

    def reloading(self) -> None:
        """RELOADING=1 with the monotonic timestamp systemd ≥ 253 wants beside it."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
