"""Which agent an RCPT address reaches: a snapshot of the address table, refreshed often.

RCPT must not wait on the database for every recipient, yet an agent added by the CLI must be
reachable within 5 s (SPEC §7): the snapshot is re-read on a short timer, and a miss re-reads
it at once (at most five times a second, so unknown recipients cannot flood the database). The
snapshot also holds each agent's OpenPGP key fingerprint (SPEC §8), never the key itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.errors import TransientError
from storage.models import Address, Agent

log = structlog.get_logger("postroom.directory")


@dataclass(frozen=True)
class Resolved:
    """An accepted recipient: the owning agent, the address as given, and its +tag."""

    agent_id: str
    address: str
    tag: str | None
    pgp_fingerprint: str | None = None


def resolve(table: dict[str, str], address: str) -> Resolved | None:
    """Match `address` against {owned address: agent id}: exact, then +tag, then `*@domain`."""
    addr = address.strip().lower()
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        return None
    domain = domain.rstrip(".")
    exact = table.get(f"{local}@{domain}")
    if exact:
        return Resolved(exact, addr, None)
    base, plus, tag = local.partition("+")
    if plus and base:
        owner = table.get(f"{base}@{domain}")
        if owner:
            return Resolved(owner, addr, tag or None)
    catch_all = table.get(f"*@{domain}")
    if catch_all:
        return Resolved(catch_all, addr, (tag or None) if plus else None)
    return None


class Directory:
    """The address snapshot and the task that keeps it fresh."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], refresh: float) -> None:
        self._sessions = sessions
        self._refresh = refresh
        self._table: dict[str, str] = {}
        self.fingerprints: dict[str, str] = {}  # agent id → OpenPGP key fingerprint
        self._loaded_at = 0.0

    async def reload(self) -> None:
        """Read the address table now."""
        try:
            async with self._sessions() as session:
                rows = (await session.exec(select(Address))).all()
                keyed = (await session.exec(select(Agent.id, Agent.pgp_fingerprint).where(
                    col(Agent.pgp_fingerprint).is_not(None)))).all()
        except Exception as e:  # the database is away: keep serving the last snapshot
            raise TransientError(f"directory reload failed: {type(e).__name__}") from e
        self._table = {r.address: r.agent_id for r in rows}
        self.fingerprints = {agent_id: str(fpr) for agent_id, fpr in keyed}
        self._loaded_at = time.monotonic()

    def agent_ids(self) -> set[str]:
        """Agents owning at least one address in the snapshot."""
        return set(self._table.values())

    async def lookup(self, address: str) -> Resolved | None:
        """Resolve with the snapshot; on a miss, re-read once if the snapshot is over 0.2 s old."""
        found = resolve(self._table, address)
        if found is None and time.monotonic() - self._loaded_at > 0.2:
            await self.reload()
            found = resolve(self._table, address)
        fingerprint = self.fingerprints.get(found.agent_id) if found is not None else None
        if found is not None and fingerprint is not None:
            found = dataclasses.replace(found, pgp_fingerprint=fingerprint)
        return found

    async def run(self) -> None:
        """Refresh forever; errors are logged and retried on the next tick."""
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.reload()
            except TransientError as e:
                log.warning("directory.reload_failed", error=str(e))
