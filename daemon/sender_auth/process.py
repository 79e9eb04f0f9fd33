"""The daemon's side of the verifier process (`worker.py`): checks go out as frames tagged with
a number and come back in any order.

The process starts with the node (`start`) and again at the next check after it died; a death
fails the checks it held with TransientError, so their jobs are retried and no message is lost
or stuck. Pipes are asyncio's: no thread of the daemon waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import struct
import sys
from typing import TYPE_CHECKING, Any

import structlog

from daemon.extract_worker import frame
from storage.errors import TransientError

if TYPE_CHECKING:
    from daemon.sender_auth.records import Authentication, Settings

log = structlog.get_logger("postroom.sender_auth")

_HEADER = struct.Struct(">Q")


class VerifierProcess:
    """One verifier process, started when first needed and again after it died."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[tuple[bool, Any]]] = {}
        self._tags = itertools.count()
        self._starting = asyncio.Lock()
        self._closed = False

    async def start(self) -> asyncio.subprocess.Process:
        """The running process, started (with its settings sent) if it is not."""
        async with self._starting:
            if self._closed:
                raise TransientError("sender verification is shutting down")
            if self._proc is None or self._proc.returncode is not None:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "daemon.sender_auth.worker", str(os.getpid()),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    close_fds=True)
                assert proc.stdin is not None
                proc.stdin.write(frame(self._settings))
                self._proc = proc
                self._reader = asyncio.create_task(self._read(proc), name="sender-auth-read")
            return self._proc

    async def check(self, source: bytes | str, client_ip: str | None, helo: str | None,
                    mail_from: str) -> Authentication:
        proc = await self.start()
        assert proc.stdin is not None
        tag = next(self._tags)
        reply: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        self._pending[tag] = reply
        try:
            try:
                proc.stdin.write(frame((tag, (source, client_ip, helo, mail_from))))
                await proc.stdin.drain()
            except (ConnectionError, RuntimeError) as e:  # it died (the reader fails the rest)
                raise TransientError("the sender verification process died") from e
            ok, value = await reply
        finally:
            self._pending.pop(tag, None)
        if not ok:
            raise value
        result: Authentication = value
        return result

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        """Hand each reply to its check; at the end of the pipe, fail the ones left."""
        assert proc.stdout is not None
        try:
            while True:
                (size,) = _HEADER.unpack(await proc.stdout.readexactly(_HEADER.size))
                tag, result = pickle.loads(await proc.stdout.readexactly(size))
                reply = self._pending.get(tag)
                if reply is not None and not reply.done():
                    reply.set_result(result)
        except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError):
            pass
        code = await proc.wait()
        if not self._closed:
            log.error("sender_auth.worker_died", exit_code=code)
        for reply in list(self._pending.values()):
            if not reply.done():
                reply.set_exception(TransientError("the sender verification process died"))

    async def close(self) -> None:
        """Stop the process (killed if it has not ended in 5 s); checks under way fail with
        TransientError."""
        self._closed = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # its end: the process ignores SIGTERM (systemd's, at drain)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if self._reader is not None:
            await self._reader
