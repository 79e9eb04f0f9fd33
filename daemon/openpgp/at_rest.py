"""The daemon's OpenPGP service (SPEC §8), used from the event loop: agents' keys imported from
the agents table when first needed, encryption at rest, signature checks, gpg in a thread.
It never decrypts: the keyring holds public keys only. A gpg missing, failing or too slow is a
`GpgUnavailable` (a `TransientError`: 451 during DATA, a retried job after it), never a lost
message."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.agents import AgentError, PgpKey
from daemon.config import EncryptionConfig
from daemon.directory import Directory
from daemon.openpgp.errors import GpgUnavailable, KeyRefused, OpenPgpError
from daemon.openpgp.keyring import Keyring
from daemon.openpgp.keys import read_key_file
from extractors import Extraction
from storage.db import translated_errors
from storage.errors import TransientError
from storage.models import Agent
from storage.spool import file_digest

log = structlog.get_logger("postroom.openpgp")

_REOPEN_AFTER = 5.0  # seconds between attempts to start a gpg that was unavailable


def read_public_key(path: Path, gpg_binary: str = "gpg") -> PgpKey:
    """An agent's key from an armored public key file, checked by gpg (an encryption-capable
    public key, not expired or revoked, no private key): AgentError saying why not."""
    with tempfile.TemporaryDirectory(prefix="pr-gpg-", dir="/tmp") as home:
        try:
            data = read_key_file(path)
            info = Keyring(Path(home), binary=gpg_binary).inspect_public_key(data)
        except KeyRefused as e:
            raise AgentError(f"{path}: {e}") from e
        except OpenPgpError as e:
            raise AgentError(str(e)) from e
    return PgpKey(armored=data.decode("ascii", "replace"), fingerprint=info.fingerprint)


class OpenPgp:
    """The daemon's OpenPGP service: one keyring, used from the event loop."""

    def __init__(self, config: EncryptionConfig, sessions: async_sessionmaker[AsyncSession],
                 directory: Directory) -> None:
        self.mode = config.at_rest
        self._config = config
        self._sessions = sessions
        self._directory = directory
        self._gpg: Keyring | None = None
        self._error = "gpg not started"
        self._tried_at = -_REOPEN_AFTER
        self._imported: set[str] = set()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Open the keyring now; a gpg that is unavailable is logged, and tried again later."""
        try:
            await self._open()
        except GpgUnavailable as e:
            log.warning("openpgp.unavailable", error=str(e))

    async def _open(self) -> Keyring:
        if self._gpg is not None:
            return self._gpg
        async with self._lock:
            if self._gpg is None:
                if time.monotonic() - self._tried_at < _REOPEN_AFTER:
                    raise GpgUnavailable(self._error)
                self._tried_at = time.monotonic()
                try:
                    self._gpg = await asyncio.to_thread(
                        Keyring, self._config.gnupg_home, timeout=self._config.gpg_timeout,
                        binary=self._config.gpg)
                except GpgUnavailable as e:
                    self._error = str(e)
                    raise
                self._imported = await asyncio.to_thread(self._gpg.fingerprints)
                log.info("openpgp.ready", keys=len(self._imported))
            return self._gpg

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a Keyring method in a thread; its failures become GpgUnavailable."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except GpgUnavailable:
            raise
        except OpenPgpError as e:
            raise GpgUnavailable(f"gpg: {e}") from e
        except OSError as e:
            raise GpgUnavailable(f"gpg: {e.strerror or e}") from e

    async def ensure_keys(self, fingerprints: Iterable[str]) -> Keyring:
        """The keyring, holding the keys of `fingerprints` (imported from the agents table)."""
        gpg = await self._open()
        missing = set(fingerprints) - self._imported
        if not missing:
            return gpg
        async with self._sessions() as session, translated_errors():
            keys = (await session.exec(select(Agent.pgp_fingerprint, Agent.pgp_public_key).where(
                col(Agent.pgp_fingerprint).in_(missing)))).all()
        for fingerprint, armored in keys:
            if armored and fingerprint:
                await self._run(gpg.import_key, armored)
                self._imported.add(fingerprint)
        absent = missing - self._imported
        if absent:  # the agent changed its key since RCPT: the relay tries again
            raise TransientError(f"no OpenPGP key {sorted(absent)[0]} in the directory")
        return gpg

    async def encrypt_file(self, src: Path, dest: Path,
                           recipients: Sequence[str]) -> tuple[str, int]:
        """Encrypt `src` to every key of `recipients` into `dest`; its sha256 and size."""
        gpg = await self.ensure_keys(recipients)
        await self._run(gpg.encrypt_file, src, dest, list(recipients))
        return await asyncio.to_thread(file_digest, dest)

    async def signature(self, found: Extraction) -> dict[str, Any] | None:
        """Check the signature of a signed message whose sender is an agent with a key:
        {"status": "valid" | "bad" | "unknown_key", "fingerprint"}; None when there is
        nothing to check against."""
        signed = found.signed
        if signed is None or not signed.signer or (signed.kind == "pgp-mime"
                                                   and signed.signature is None):
            return None
        owner = await self._directory.lookup(signed.signer)
        if owner is None or owner.pgp_fingerprint is None:
            return None
        gpg = await self.ensure_keys([owner.pgp_fingerprint])
        expected = [owner.pgp_fingerprint]
        if signed.signature is not None:
            result = await self._run(gpg.verify_detached, signed.content, signed.signature,
                                     expected)
        else:
            result = await self._run(gpg.verify_clearsigned, signed.content, expected)
        return {"status": result.status, "fingerprint": result.fingerprint}
