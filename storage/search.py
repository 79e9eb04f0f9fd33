"""Full-text search over messages with the database's own index (SPEC §15), and the two
lookups of threading beyond the headers (a parent's thread, a subject's).

SQLite: an FTS5 table `message_search` (subject, addresses, body; rowid = the message's seq),
ranked by bm25 with the subject weighing most. PostgreSQL: a table of one `tsvector` per
message (subject weight A, addresses B, body D) under a GIN index, ranked by `ts_rank` (the
tables are made by migrations 0010 and 0011). Both tokenize without stemming ('unicode61' /
'simple'), so every language is found as written. A query is words (all must match), "quoted
phrases", `-word` to exclude, and `OR`; it reaches the database as bound parameters, rebuilt
from its tokens (FTS5 syntax never comes from the caller). Text knows nothing of MIME here:
the caller gives what to index.

Indexing is two steps. `queue_message`, in the transaction that records a message's results,
writes a plain row to `message_search_pending` (a B-tree insert); `index_pending` moves many
such rows into the index in one statement, in a transaction of its own. A full-text insert per
results transaction cost small mail a tenth of its throughput (the index's segments written
and merged per commit, under SQLite's one write lock); a batch pays that once. The pending
table is durable, so a crash between the two steps loses nothing: whoever runs `index_pending`
next indexes the rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

_TOKEN = re.compile(r'-?"[^"]*"?|\S+')
_WORDS = re.compile(r"\w+")

# A message into the index at once, or its row queued for it; its seq found by its id
# (REPLACE: a message indexed again).
_SQLITE_INDEX = text("INSERT OR REPLACE INTO message_search (rowid, subject, addresses, body) "
                     "SELECT seq, :subject, :addresses, :body FROM messages WHERE id = :id")
_POSTGRES_INDEX = text(
    "INSERT INTO message_search (seq, document) SELECT seq, "
    "setweight(to_tsvector('simple', :subject), 'A') || "
    "setweight(to_tsvector('simple', :addresses), 'B') || to_tsvector('simple', :body) "
    "FROM messages WHERE id = :id "
    "ON CONFLICT (seq) DO UPDATE SET document = EXCLUDED.document")
_SQLITE_QUEUE = text("INSERT OR REPLACE INTO message_search_pending (seq, subject, addresses, "
                     "body) SELECT seq, :subject, :addresses, :body FROM messages WHERE id = :id")
_POSTGRES_QUEUE = text(
    "INSERT INTO message_search_pending (seq, subject, addresses, body) "
    "SELECT seq, :subject, :addresses, :body FROM messages WHERE id = :id "
    "ON CONFLICT (seq) DO UPDATE SET subject = EXCLUDED.subject, "
    "addresses = EXCLUDED.addresses, body = EXCLUDED.body")
# The oldest `limit` pending rows into the index. SQLite has one writer: the rows selected are
# the rows deleted. PostgreSQL: the rows are taken (deleted) and indexed in one statement, and
# rows another node is taking are skipped.
_SQLITE_LAST = text("SELECT max(seq), count(*) FROM (SELECT seq FROM message_search_pending "
                    "ORDER BY seq LIMIT :limit)")
_SQLITE_MOVE = text("INSERT OR REPLACE INTO message_search (rowid, subject, addresses, body) "
                    "SELECT seq, subject, addresses, body FROM message_search_pending "
                    "WHERE seq <= :last")
_SQLITE_TAKEN = text("DELETE FROM message_search_pending WHERE seq <= :last")
_POSTGRES_MOVE = text(
    "WITH taken AS (DELETE FROM message_search_pending WHERE seq IN (SELECT seq FROM "
    "message_search_pending ORDER BY seq LIMIT :limit FOR UPDATE SKIP LOCKED) "
    "RETURNING seq, subject, addresses, body) "
    "INSERT INTO message_search (seq, document) SELECT seq, "
    "setweight(to_tsvector('simple', subject), 'A') || "
    "setweight(to_tsvector('simple', addresses), 'B') || to_tsvector('simple', body) "
    "FROM taken ON CONFLICT (seq) DO UPDATE SET document = EXCLUDED.document")
# Forgetting: the pending row first (on PostgreSQL that waits for a batch that is taking it),
# then the index's (which that batch may have just written).
_FORGET = (text("DELETE FROM message_search_pending WHERE seq = :seq"),)
_SQLITE_FORGET = (*_FORGET, text("DELETE FROM message_search WHERE rowid = :seq"))
_POSTGRES_FORGET = (*_FORGET, text("DELETE FROM message_search WHERE seq = :seq"))
_PARENT = text(
    "SELECT thread_id FROM messages WHERE own_thread IN :parents AND thread_id != :thread "
    "AND seq IN (SELECT message_seq FROM recipients WHERE agent_id IN :agents) "
    "ORDER BY seq DESC LIMIT 1").bindparams(bindparam("parents", expanding=True),
                                            bindparam("agents", expanding=True))
# The latest thread of a subject among some agents' mail since a time.
_SAME_SUBJECT = text(
    "SELECT thread_id FROM messages WHERE subject_key = :key AND id != :id "
    "AND received_at >= :since AND thread_id IS NOT NULL AND seq IN "
    "(SELECT message_seq FROM recipients WHERE agent_id IN :agents) "
    "ORDER BY seq DESC LIMIT 1").bindparams(bindparam("agents", expanding=True),
                                            bindparam("since", type_=DateTime(timezone=True)))

# The agent's messages (verdict and quarantine conditions are fixed fragments, values bound).
_MINE = ("SELECT r.message_seq FROM recipients r JOIN messages m ON m.seq = r.message_seq "
         "WHERE r.agent_id = :agent")
_BY_VERDICT = " AND m.verdict = :verdict"
_AUTHENTICATED = " AND (m.direction = 'outbound' OR m.verdict = 'pass')"
_SQLITE_SEARCH = (
    "SELECT rowid FROM message_search WHERE message_search MATCH :q AND rowid IN ({mine}) "
    "ORDER BY bm25(message_search, 10.0, 4.0, 1.0), rowid DESC LIMIT :limit OFFSET :offset")
_POSTGRES_SEARCH = (
    "SELECT seq FROM message_search WHERE document @@ websearch_to_tsquery('simple', :q) "
    "AND seq IN ({mine}) "
    "ORDER BY ts_rank(document, websearch_to_tsquery('simple', :q)) DESC, seq DESC "
    "LIMIT :limit OFFSET :offset")


def outside_the_models(obj: object, name: str | None, type_: str, reflected: bool,
                       compare_to: object) -> bool:
    """Alembic's `include_object`: False for the search tables (FTS5's shadow tables too),
    which this module keeps, not the models."""
    return not (type_ == "table" and (name or "").startswith("message_search"))


def _phrase(words: str) -> str | None:
    found = _WORDS.findall(words)
    return '"' + " ".join(found) + '"' if found else None


def fts5_query(q: str) -> str | None:
    """The FTS5 query for a user's words, or None when it names nothing to find."""
    terms: list[str] = []
    excluded: list[str] = []
    for token in _TOKEN.findall(q):
        if token == "OR":
            if terms and terms[-1] != "OR":
                terms.append("OR")
            continue
        negative = token.startswith("-") and len(token) > 1
        phrase = _phrase(token[1:] if negative else token)
        if phrase is not None:
            (excluded if negative else terms).append(phrase)
    while terms and terms[-1] == "OR":
        terms.pop()
    if not terms:
        return None
    query = " ".join(terms)
    for phrase in excluded:
        query = f"({query}) NOT {phrase}"
    return query


def _values(message_id: str, subject: str, addresses: str, body: str) -> dict[str, str]:
    return {"id": message_id, **{k: v.replace("\x00", " ") for k, v in (
        ("subject", subject), ("addresses", addresses), ("body", body))}}  # no NUL in text


def index_message(conn: Connection, message_id: str, subject: str, addresses: str,
                  body: str) -> None:
    """(Re)index one message at once, in the caller's transaction (mail sent through the
    API: one at a time, searchable when the send returns)."""
    conn.execute(_POSTGRES_INDEX if conn.dialect.name == "postgresql" else _SQLITE_INDEX,
                 _values(message_id, subject, addresses, body))


def queue_message(conn: Connection, message_id: str, subject: str, addresses: str,
                  body: str) -> None:
    """Queue one message for (re)indexing, in the caller's transaction: searchable once
    `index_pending` has run after it."""
    conn.execute(_POSTGRES_QUEUE if conn.dialect.name == "postgresql" else _SQLITE_QUEUE,
                 _values(message_id, subject, addresses, body))


def index_pending(conn: Connection, limit: int) -> int:
    """Index up to `limit` queued messages, oldest first, in the caller's transaction; how
    many (fewer than `limit`: none is left, unless another node is taking some)."""
    if conn.dialect.name == "postgresql":
        return int(conn.execute(_POSTGRES_MOVE, {"limit": limit}).rowcount or 0)
    last, count = conn.execute(_SQLITE_LAST, {"limit": limit}).one()
    if not count:
        return 0
    conn.execute(_SQLITE_MOVE, {"last": last})
    conn.execute(_SQLITE_TAKEN, {"last": last})
    return int(count)


def thread_of_subject(conn: Connection, key: str, message_id: str, agents: Sequence[str],
                      since: datetime) -> str | None:
    """The thread of the latest message other than `message_id` whose subject key is `key`,
    among `agents`' mail received since `since` (None when there is none)."""
    if not agents:
        return None
    found = conn.execute(_SAME_SUBJECT, {"key": key, "id": message_id, "agents": list(agents),
                                         "since": since}).scalar()
    return None if found is None else str(found)


def thread_of_parents(conn: Connection, parents: Sequence[str], agents: Sequence[str],
                      thread_id: str) -> str | None:
    """The thread of the latest of `agents`' messages whose own Message-ID names one of
    `parents` (their `own_thread`), when that is not `thread_id`: the thread a reply joins
    when its parent joined another one than its headers name."""
    if not parents or not agents:
        return None
    found = conn.execute(_PARENT, {"parents": list(parents), "agents": list(agents),
                                   "thread": thread_id}).scalar()
    return None if found is None else str(found)


def forget_messages(conn: Connection, seqs: Sequence[int]) -> None:
    """Remove messages from the index and from its queue (purged)."""
    statements = _POSTGRES_FORGET if conn.dialect.name == "postgresql" else _SQLITE_FORGET
    if seqs:
        for statement in statements:
            conn.execute(statement, [{"seq": s} for s in seqs])


async def search(conn: AsyncConnection, agent_id: str, q: str, limit: int, offset: int,
                 verdict: str | None = None, authenticated_only: bool = False) -> list[int]:
    """The seqs of the agent's messages matching `q`, best first; `verdict` keeps those whose
    sender authentication said so, `authenticated_only` inbound mail that passed (and all
    outbound)."""
    if conn.dialect.name == "postgresql":
        if not _WORDS.search(q):
            return []
        template, query = _POSTGRES_SEARCH, q
    else:
        built = fts5_query(q)
        if built is None:
            return []
        template, query = _SQLITE_SEARCH, built
    mine = _MINE + (_BY_VERDICT if verdict is not None else "") + \
        (_AUTHENTICATED if authenticated_only else "")
    values: dict[str, object] = {"q": query, "agent": agent_id, "limit": limit,
                                 "offset": offset}
    if verdict is not None:
        values["verdict"] = verdict
    rows = await conn.execute(text(template.format(mine=mine)), values)
    return [int(r[0]) for r in rows.all()]
