"""Agents and their addresses: create, list, remove, rotate keys, and resolve RCPT addresses.

Used by the CLI (while daemons run) and by `serve` for the agents declared in config.toml.
Keys are returned once and stored only as hashes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from daemon.ids import hash_api_key, new_agent_id, new_api_key
from storage.db import Conflict, translated_errors
from storage.models import Address, Agent

_ADDRESS_RE = re.compile(r"(\*|[^\s@<>()\[\],;:\"\\]+)@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?\.?")


class AgentError(Exception):
    """A refusal about agents (duplicate name, address taken, unknown agent)."""


def normalize_address(address: str) -> str:
    """Lower-case and validate an address an agent may own (`*@domain` is a catch-all)."""
    addr = address.strip().lower()
    if not _ADDRESS_RE.fullmatch(addr) or len(addr) > 320:
        raise AgentError(f"not a valid address: {address!r}")
    return addr.rstrip(".")


def utcnow() -> datetime:
    """Aware UTC now: how every timestamp is stored and compared."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class AgentInfo:
    """An agent as the CLI and the API show it (never the key hash)."""

    id: str
    name: str
    addresses: tuple[str, ...]
    key_prefix: str
    created_at: datetime
    pgp_fingerprint: str | None = None
    accept: str = "all"  # SPEC §13: "all", or "authenticated" (the rest is quarantined)


async def _addresses(session: AsyncSession, agent_id: str) -> tuple[str, ...]:
    rows = await session.exec(select(Address.address).where(Address.agent_id == agent_id)
                              .order_by(col(Address.address)))
    return tuple(rows.all())


@dataclass(frozen=True)
class PgpKey:
    """An agent's OpenPGP public key, already checked by gpg (`daemon.openpgp.read_public_key`)."""

    armored: str
    fingerprint: str


async def create_agent(sessions: async_sessionmaker[AsyncSession], name: str,
                       addresses: list[str], api_key: str | None = None,
                       pgp_key: PgpKey | None = None, accept: str = "all",
                       ) -> tuple[AgentInfo, str]:
    """Create an agent owning `addresses`; returns it and its API key (shown once)."""
    if name.startswith("agt_") or not name.strip() or len(name) > 200:
        raise AgentError(f"invalid agent name {name!r} (1–200 characters, not starting with agt_)")
    addrs = sorted({normalize_address(a) for a in addresses})
    if not addrs:
        raise AgentError("an agent needs at least one address")
    if accept not in ACCEPT:
        raise AgentError(f"accept must be one of {', '.join(ACCEPT)}")
    key = api_key or new_api_key()
    now = utcnow()
    agent = Agent(id=new_agent_id(), name=name, key_hash=hash_api_key(key),
                  key_prefix=key[:10], created_at=now, updated_at=now,
                  pgp_public_key=pgp_key.armored if pgp_key else None,
                  pgp_fingerprint=pgp_key.fingerprint if pgp_key else None, accept=accept)
    async with sessions() as session, translated_errors():
        if (await session.exec(select(Agent).where(Agent.name == name))).first():
            raise AgentError(f"an agent named {name!r} exists")
        taken = (await session.exec(select(Address.address)
                                    .where(col(Address.address).in_(addrs)))).all()
        if taken:
            raise AgentError(f"address already owned: {', '.join(taken)}")
        session.add(agent)
        await session.flush()
        session.add_all([Address(address=a, agent_id=agent.id) for a in addrs])
        try:
            await session.commit()
        except Exception as e:  # a concurrent writer took the name or an address
            raise AgentError(f"could not create agent {name!r}: {e}") from e
    return _info(agent, tuple(addrs)), key


def _info(agent: Agent, addresses: tuple[str, ...]) -> AgentInfo:
    return AgentInfo(agent.id, agent.name, addresses, agent.key_prefix, agent.created_at,
                     agent.pgp_fingerprint, agent.accept)


async def find_agent(sessions: async_sessionmaker[AsyncSession], ref: str) -> AgentInfo | None:
    """The agent with this id or name."""
    async with sessions() as session, translated_errors():
        agent = (await session.exec(select(Agent).where(
            Agent.id == ref if ref.startswith("agt_") else Agent.name == ref))).first()
        if agent is None:
            return None
        return _info(agent, await _addresses(session, agent.id))


async def list_agents(sessions: async_sessionmaker[AsyncSession]) -> list[AgentInfo]:
    """Every agent, oldest first."""
    async with sessions() as session, translated_errors():
        agents = (await session.exec(select(Agent).order_by(col(Agent.created_at)))).all()
        addr_rows = (await session.exec(select(Address))).all()
    by_agent: dict[str, list[str]] = {}
    for a in addr_rows:
        by_agent.setdefault(a.agent_id, []).append(a.address)
    return [_info(a, tuple(sorted(by_agent.get(a.id, [])))) for a in agents]


async def remove_agent(sessions: async_sessionmaker[AsyncSession], ref: str) -> AgentInfo:
    """Delete the agent and its addresses (its messages stay, unreachable by any key)."""
    info = await find_agent(sessions, ref)
    if info is None:
        raise AgentError(f"no agent {ref!r}")
    async with sessions() as session, translated_errors():
        await session.exec(delete(Address).where(col(Address.agent_id) == info.id))
        await session.exec(delete(Agent).where(col(Agent.id) == info.id))
        await session.commit()
    return info


async def rotate_key(sessions: async_sessionmaker[AsyncSession],
                     ref: str) -> tuple[AgentInfo, str]:
    """Give the agent a new key; running daemons refuse the old one within 2 s (their key
    cache, `daemon/api/keycache.py`)."""
    key = new_api_key()
    async with sessions() as session, translated_errors():
        agent = (await session.exec(select(Agent).where(
            Agent.id == ref if ref.startswith("agt_") else Agent.name == ref))).first()
        if agent is None:
            raise AgentError(f"no agent {ref!r}")
        agent.key_hash = hash_api_key(key)
        agent.key_prefix = key[:10]
        agent.updated_at = utcnow()
        session.add(agent)
        await session.commit()
        info = _info(agent, await _addresses(session, agent.id))
    return info, key


async def set_pgp_key(sessions: async_sessionmaker[AsyncSession], ref: str,
                      pgp_key: PgpKey | None) -> AgentInfo:
    """Give the agent a new OpenPGP key (None: none). Mail stored earlier stays encrypted to
    the key it was stored with; running daemons use the new key within seconds."""
    async with sessions() as session, translated_errors():
        agent = (await session.exec(select(Agent).where(
            Agent.id == ref if ref.startswith("agt_") else Agent.name == ref))).first()
        if agent is None:
            raise AgentError(f"no agent {ref!r}")
        agent.pgp_public_key = pgp_key.armored if pgp_key else None
        agent.pgp_fingerprint = pgp_key.fingerprint if pgp_key else None
        agent.updated_at = utcnow()
        session.add(agent)
        await session.commit()
        return _info(agent, await _addresses(session, agent.id))


ACCEPT = ("all", "authenticated")


async def set_accept(sessions: async_sessionmaker[AsyncSession], ref: str,
                     accept: str) -> AgentInfo:
    """What mail the agent sees (SPEC §13): "all", or "authenticated", which keeps inbound
    mail whose sender verdict is not `pass` out of its listing and events (quarantined, shown
    on request). Running daemons apply it to the next request."""
    if accept not in ACCEPT:
        raise AgentError(f"accept must be one of {', '.join(ACCEPT)}")
    async with sessions() as session, translated_errors():
        agent = (await session.exec(select(Agent).where(
            Agent.id == ref if ref.startswith("agt_") else Agent.name == ref))).first()
        if agent is None:
            raise AgentError(f"no agent {ref!r}")
        agent.accept = accept
        agent.updated_at = utcnow()
        session.add(agent)
        await session.commit()
        return _info(agent, await _addresses(session, agent.id))


__all__ = ["ACCEPT", "AgentError", "AgentInfo", "Conflict", "PgpKey", "create_agent",
           "find_agent", "list_agents", "normalize_address", "remove_agent", "rotate_key",
           "set_accept", "set_pgp_key", "utcnow"]
