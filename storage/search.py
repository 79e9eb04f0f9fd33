"""Full-text search over messages with the database's own index (SPEC §15).

SQLite: an FTS5 table `message_search` (subject, addresses, body; rowid = the message's seq),
ranked by bm25 with the subject weighing most. PostgreSQL: a table of one `tsvector` per
message (subject weight A, addresses B, body D) under a GIN index, ranked by `ts_rank`. Both
tokenize without stemming ('unicode61' / 'simple'), so every language is found as written.
A query is words (all must match), "quoted phrases", `-word` to exclude, and `OR`; it reaches
the database as bound parameters, rebuilt from its tokens (FTS5 syntax never comes from
the caller). Text knows nothing of MIME here: the caller gives what to index.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

SQLITE_TABLE = ("CREATE VIRTUAL TABLE message_search USING fts5(subject, addresses, body, "
                "tokenize = 'unicode61 remove_diacritics 2')")
POSTGRES_TABLE = ("CREATE TABLE message_search (seq BIGINT PRIMARY KEY, "
                  "document TSVECTOR NOT NULL)")
POSTGRES_INDEX = "CREATE INDEX ix_message_search ON message_search USING GIN (document)"

_TOKEN = re.compile(r'-?"[^"]*"?|\S+')
_WORDS = re.compile(r"\w+")

_SQLITE_INDEX = text("INSERT INTO message_search (rowid, subject, addresses, body) "
                     "VALUES (:seq, :subject, :addresses, :body)")
_SQLITE_FORGET = text("DELETE FROM message_search WHERE rowid = :seq")
_POSTGRES_INDEX = text(
    "INSERT INTO message_search (seq, document) VALUES (:seq, "
    "setweight(to_tsvector('simple', :subject), 'A') || "
    "setweight(to_tsvector('simple', :addresses), 'B') || to_tsvector('simple', :body)) "
    "ON CONFLICT (seq) DO UPDATE SET document = EXCLUDED.document")
_POSTGRES_FORGET = text("DELETE FROM message_search WHERE seq = :seq")
_SEQ = text("SELECT seq FROM messages WHERE id = :id")

_SQLITE_SEARCH = text(
    "SELECT rowid FROM message_search WHERE message_search MATCH :q AND rowid IN "
    "(SELECT message_seq FROM recipients WHERE agent_id = :agent) "
    "ORDER BY bm25(message_search, 10.0, 4.0, 1.0), rowid DESC LIMIT :limit OFFSET :offset")
_POSTGRES_SEARCH = text(
    "SELECT seq FROM message_search WHERE document @@ websearch_to_tsquery('simple', :q) "
    "AND seq IN (SELECT message_seq FROM recipients WHERE agent_id = :agent) "
    "ORDER BY ts_rank(document, websearch_to_tsquery('simple', :q)) DESC, seq DESC "
    "LIMIT :limit OFFSET :offset")


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


def index_message(conn: Connection, message_id: str, subject: str, addresses: str,
                  body: str) -> None:
    """(Re)index one message, in the caller's transaction."""
    seq = conn.execute(_SEQ, {"id": message_id}).scalar()
    if seq is None:
        return
    values = {"seq": seq, "subject": subject, "addresses": addresses, "body": body}
    if conn.dialect.name == "postgresql":
        conn.execute(_POSTGRES_INDEX, values)
    else:
        conn.execute(_SQLITE_FORGET, values)
        conn.execute(_SQLITE_INDEX, values)


def forget_messages(conn: Connection, seqs: Sequence[int]) -> None:
    """Remove messages from the index (purged)."""
    statement = _POSTGRES_FORGET if conn.dialect.name == "postgresql" else _SQLITE_FORGET
    if seqs:
        conn.execute(statement, [{"seq": s} for s in seqs])


async def search(conn: AsyncConnection, agent_id: str, q: str, limit: int,
                 offset: int) -> list[int]:
    """The seqs of the agent's messages matching `q`, best first."""
    if conn.dialect.name == "postgresql":
        if not _WORDS.search(q):
            return []
        statement, query = _POSTGRES_SEARCH, q
    else:
        built = fts5_query(q)
        if built is None:
            return []
        statement, query = _SQLITE_SEARCH, built
    rows = await conn.execute(statement, {"q": query, "agent": agent_id, "limit": limit,
                                          "offset": offset})
    return [int(r[0]) for r in rows.all()]
