"""Inboxes, as the seeds' APIs name them (SPEC §17): each address of an agent is one inbox, its
id `inb_…` derived from the address (`daemon.ids.inbox_id_for`), so an inbox needs no row.

An inbox of another agent answers 404 exactly as one that does not exist. The mail of an inbox is
what was addressed to it (its +tag variants included; for a catch-all `*@domain`, what no other
address of the agent on that domain took) and what the agent sent from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, not_, or_, select

from daemon.api.deps import AppContext
from daemon.api.errors import not_found
from daemon.ids import inbox_id_for
from storage.db import translated_errors
from storage.models import Address, Recipient

_ADDRESSES: Any = Address.__table__  # type: ignore[attr-defined]
_ADDRESS: Any = Recipient.__table__.c.address  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Inbox:
    id: str
    address: str
    others: tuple[str, ...]  # the agent's other addresses (what a catch-all does not take)

    @property
    def catch_all(self) -> bool:
        return self.address.startswith("*@")

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "address": self.address}

    def recipient_filter(self) -> Any:
        """Which of the agent's recipient rows (`recipients.address`) belong to this inbox."""
        local, _, domain = self.address.rpartition("@")
        if not self.catch_all:
            return or_(self.address == _ADDRESS,
                       _ADDRESS.like(f"{_escaped(local)}+%@{_escaped(domain)}", escape="\\"))
        taken = [Inbox("", other, ()).recipient_filter() for other in self.others
                 if other.endswith(f"@{domain}") and not other.startswith("*@")]
        return and_(_ADDRESS.like(f"%@{_escaped(domain)}", escape="\\"), *map(not_, taken))


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def agent_inboxes(ctx: AppContext, agent_id: str) -> list[Inbox]:
    """The agent's inboxes, in the order of their addresses."""
    async with ctx.sessions() as session, translated_errors():
        addresses = [str(a) for a in (await session.execute(
            select(_ADDRESSES.c.address).where(_ADDRESSES.c.agent_id == agent_id)
            .order_by(_ADDRESSES.c.address))).scalars()]
    return [Inbox(inbox_id_for(a), a, tuple(o for o in addresses if o != a)) for a in addresses]


async def agent_inbox(ctx: AppContext, agent_id: str, inbox_id: str) -> Inbox:
    """The agent's inbox `inbox_id`; 404 if it has none of that id."""
    for inbox in await agent_inboxes(ctx, agent_id):
        if inbox.id == inbox_id:
            return inbox
    raise not_found("inbox")
