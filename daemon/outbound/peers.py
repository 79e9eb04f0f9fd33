"""The directory of peers (SPEC §12): who an address is, and the OpenPGP key to encrypt to.

Local agents answer from their own rows (`local: true`, their key if they have one); external
addresses answer from what an operator registered with `postroom directory add`. Keys are kept
armored, as checked by gpg on the way in; nothing here runs gpg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.agents import AgentError, PgpKey, normalize_address, utcnow
from daemon.directory import resolve
from storage.db import translated_errors
from storage.models import Address, Agent, DirectoryEntry

ADDRESSES: Any = Address.__table__  # type: ignore[attr-defined]
AGENTS: Any = Agent.__table__  # type: ignore[attr-defined]
ENTRIES: Any = DirectoryEntry.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Peer:
    address: str
    local: bool
    openpgp_public_key: str | None
    fingerprint: str | None = None


async def lookup_peer(sessions: async_sessionmaker[AsyncSession], address: str) -> Peer | None:
    """The peer at `address`: a local agent, a registered external address, or None."""
    addr = address.strip().lower()
    local, _, domain = addr.rpartition("@")
    base = local.partition("+")[0]
    async with sessions() as session, translated_errors():
        owned = {str(r[0]): str(r[1]) for r in (await session.execute(
            select(ADDRESSES.c.address, ADDRESSES.c.agent_id).where(ADDRESSES.c.address.in_(
                [addr, f"{base}@{domain}", f"*@{domain}"])))).all()}
        found = resolve(owned, addr)
        if found is not None:
            key = (await session.execute(select(AGENTS.c.pgp_public_key, AGENTS.c.pgp_fingerprint)
                                         .where(AGENTS.c.id == found.agent_id))).first()
            return Peer(addr, True, key[0] if key else None, key[1] if key else None)
        entry = (await session.execute(select(ENTRIES).where(ENTRIES.c.address == addr))).first()
    if entry is None:
        return None
    return Peer(addr, False, entry.pgp_public_key, entry.pgp_fingerprint)


async def add_peer(sessions: async_sessionmaker[AsyncSession], address: str,
                   key: PgpKey | None) -> Peer:
    """Register (or update) an external address; a local agent's address is refused."""
    addr = normalize_address(address)
    if addr.startswith("*@"):
        raise AgentError("a directory entry is one address, not a catch-all")
    existing = await lookup_peer(sessions, addr)
    if existing is not None and existing.local:
        raise AgentError(f"{addr} belongs to a local agent: use `postroom agent set-pgp-key`")
    now = utcnow()
    async with sessions() as session, translated_errors():
        await session.execute(delete(ENTRIES).where(ENTRIES.c.address == addr))
        await session.execute(ENTRIES.insert().values(
            address=addr, pgp_public_key=key.armored if key else None,
            pgp_fingerprint=key.fingerprint if key else None, created_at=now, updated_at=now))
        await session.commit()
    return Peer(addr, False, key.armored if key else None, key.fingerprint if key else None)


async def list_peers(sessions: async_sessionmaker[AsyncSession]) -> list[Peer]:
    """The registered external addresses, in order."""
    async with sessions() as session, translated_errors():
        rows = (await session.execute(select(ENTRIES).order_by(ENTRIES.c.address))).all()
    return [Peer(r.address, False, r.pgp_public_key, r.pgp_fingerprint) for r in rows]


async def remove_peer(sessions: async_sessionmaker[AsyncSession], address: str) -> None:
    """Forget an external address; `AgentError` when it was not registered."""
    addr = address.strip().lower()
    async with sessions() as session, translated_errors():
        gone = await session.execute(delete(ENTRIES).where(ENTRIES.c.address == addr))
        await session.commit()
    if not gone.rowcount:  # type: ignore[attr-defined]
        raise AgentError(f"{addr} is not in the directory")
