"""The API's hot reads as SQLAlchemy Core statements: a key's agent, an attachment, a message.

One statement per request (two for a whole message), no ORM session; rows carry the attribute
names `daemon/views.py` reads. Visibility is part of every statement, so a message not addressed
to the agent comes back exactly as a missing one. Nothing here writes.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Dialect, Select, Table, and_, bindparam, exists, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import translated_errors
from storage.models import Agent, Attachment, Message, Recipient

_agents: Table = Agent.__table__  # type: ignore[attr-defined]
_messages: Table = Message.__table__  # type: ignore[attr-defined]
_recipients: Table = Recipient.__table__  # type: ignore[attr-defined]
_attachments: Table = Attachment.__table__  # type: ignore[attr-defined]


def _labelled(model: type[Any]) -> list[Any]:
    """Every column of `model`'s table, labelled with its attribute name (`from_`, not
    `from_header`), so a Core row reads like the ORM object."""
    return [column.label(name) for name, column in inspect(model).columns.items()]


AGENT_FOR_KEY_HASH: Select[Any] = (
    select(_agents.c.id).where(_agents.c.key_hash == bindparam("key_hash")))
AGENT_ACCEPT: Select[Any] = select(_agents.c.accept).where(_agents.c.id == bindparam("agent_id"))

_visible = exists().where(_recipients.c.message_id == bindparam("message_id"),
                          _recipients.c.agent_id == bindparam("agent_id"))

# One row per visible message: its status and the attachment at `index` (all None if absent).
ATTACHMENT: Select[Any] = (
    select(_messages.c.status.label("message_status"), *_labelled(Attachment))
    .select_from(_messages.outerjoin(_attachments, and_(
        _attachments.c.message_id == _messages.c.id,
        _attachments.c.index == bindparam("index"))))
    .where(_messages.c.id == bindparam("message_id"), _visible))

# One row per recipient of the message that belongs to the agent, each with the whole message.
MESSAGE: Select[Any] = (
    select(*_labelled(Message), _recipients.c.address, _recipients.c.tag)
    .select_from(_recipients.join(_messages, _messages.c.id == _recipients.c.message_id))
    .where(_recipients.c.message_id == bindparam("message_id"),
           _recipients.c.agent_id == bindparam("agent_id"))
    .order_by(_recipients.c.id))

ATTACHMENTS: Select[Any] = (
    select(*_labelled(Attachment))
    .where(_attachments.c.message_id == bindparam("message_id"))
    .order_by(_attachments.c.index))

# An attachment by its id, if the agent is a recipient of its message.
ATTACHMENT_BY_ID: Select[Any] = (
    select(*_labelled(Attachment))
    .where(_attachments.c.id == bindparam("attachment_id"),
           exists().where(_recipients.c.message_id == _attachments.c.message_id,
                          _recipients.c.agent_id == bindparam("agent_id"))))

STATEMENTS = (AGENT_FOR_KEY_HASH, AGENT_ACCEPT, ATTACHMENT, MESSAGE, ATTACHMENTS, ATTACHMENT_BY_ID)


def _sqlite_file(engine: AsyncEngine) -> Path | None:
    """The file of a SQLite engine; None for other databases, in-memory ones and URI names."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database.startswith((":", "file:")):
        return None
    return Path(database)


class _Prepared:
    """A statement compiled once for SQLite: its SQL, its parameters in order, and how a
    sqlite3 tuple becomes a named row (with the dialect's own conversions: booleans, times)."""

    def __init__(self, stmt: Select[Any], dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self.params = tuple(compiled.positiontup or ())
        columns = list(stmt.selected_columns)
        self.row: Any = namedtuple("LookupRow", [c.key for c in columns])  # type: ignore[misc]
        self.converters = [(i, convert) for i, c in enumerate(columns)
                           if (convert := c.type.dialect_impl(dialect).result_processor(
                               dialect, None)) is not None]

    def rows(self, conn: sqlite3.Connection, params: dict[str, Any]) -> list[Any]:
        found = conn.execute(self.sql, [params[name] for name in self.params]).fetchall()
        if not self.converters:
            return [self.row._make(r) for r in found]
        out = []
        for r in found:
            values = list(r)
            for i, convert in self.converters:
                values[i] = convert(values[i])
            out.append(self.row._make(values))
        return out


class _LoopReader:
    """A read-only sqlite3 connection used from the event loop's own thread, without awaiting.

    Every statement here is a point lookup on an index of a WAL database: tens of µs inside
    SQLite, less than one hop to an aiosqlite thread, which under load also waits for the GIL
    (hops were most of a request's time). WAL readers never wait for the writer, and with no
    busy timeout this connection never sleeps on the loop: a busy or failing database raises,
    and the caller takes the pooled path instead, which waits off the loop or reports the
    error as every other database error is reported. The price: a lookup whose pages are not
    in the page cache reads them from disk on the loop (a few pages of three indexes).
    """

    def __init__(self, path: Path, dialect: Dialect) -> None:
        self._path = path
        self._prepared = {id(s): _Prepared(s, dialect) for s in STATEMENTS}
        self._conn: sqlite3.Connection | None = None

    def rows(self, stmt: Select[Any], params: dict[str, Any]) -> list[Any]:
        if self._conn is None:  # opened on first use, so in the loop's thread
            # mode=rw: never create a database file that is not there.
            self._conn = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=rw", uri=True,
                                         timeout=0, isolation_level=None)
            self._conn.execute("PRAGMA query_only=ON")
        return self._prepared[id(stmt)].rows(self._conn, params)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Lookups:
    """Runs the statements: for a SQLite file on the loop's own reader connection, otherwise
    (other databases, or a busy SQLite) on a pooled connection of `engine`."""

    def __init__(self, engine: AsyncEngine, on_loop: bool = True) -> None:
        self._engine = engine
        path = _sqlite_file(engine)
        self._local = (_LoopReader(path, engine.dialect)
                       if on_loop and path is not None else None)

    async def _rows(self, *statements: tuple[Select[Any], dict[str, Any]]
                    ) -> list[Sequence[Any]]:
        if self._local is not None:
            try:
                return [self._local.rows(stmt, params) for stmt, params in statements]
            except sqlite3.Error:
                pass  # locked (a recovery, an exclusive lock) or failing: the pool waits or says
        async with translated_errors(), self._engine.connect() as conn:
            return [(await conn.execute(stmt, params)).all() for stmt, params in statements]

    def close(self) -> None:
        """Close the loop's reader connection (the engine belongs to the caller)."""
        if self._local is not None:
            self._local.close()

    async def agent_id_for_key_hash(self, key_hash: str) -> str | None:
        """The id of the agent whose API key hashes to `key_hash`."""
        (rows,) = await self._rows((AGENT_FOR_KEY_HASH, {"key_hash": key_hash}))
        return str(rows[0].id) if rows else None

    async def quarantines(self, agent_id: str) -> bool:
        """Whether the agent accepts only authenticated mail (SPEC §13: the rest is kept out
        of its listings and events unless asked for)."""
        (rows,) = await self._rows((AGENT_ACCEPT, {"agent_id": agent_id}))
        return bool(rows) and rows[0].accept == "authenticated"

    async def attachment(self, agent_id: str, message_id: str,
                         index: int) -> tuple[str, Any | None] | None:
        """(message status, the attachment's row or None); None if the agent cannot see the
        message."""
        (rows,) = await self._rows((ATTACHMENT, {"agent_id": agent_id,
                                                 "message_id": message_id, "index": index}))
        if not rows:
            return None
        row = rows[0]
        return str(row.message_status), (row if row.id is not None else None)

    async def attachment_by_id(self, agent_id: str, attachment_id: str) -> Any | None:
        """The attachment's row; None if there is none or the agent cannot see its message."""
        (rows,) = await self._rows((ATTACHMENT_BY_ID, {"agent_id": agent_id,
                                                       "attachment_id": attachment_id}))
        return rows[0] if rows else None

    async def message(self, agent_id: str, message_id: str, with_attachments: bool = True
                      ) -> tuple[Sequence[Any], Sequence[Any]] | None:
        """(the message once per own recipient, its attachments if asked); None if the agent
        cannot see the message."""
        statements = [(MESSAGE, {"agent_id": agent_id, "message_id": message_id})]
        if with_attachments:
            statements.append((ATTACHMENTS, {"message_id": message_id}))
        mine, *atts = await self._rows(*statements)
        return (mine, atts[0] if atts else ()) if mine else None
