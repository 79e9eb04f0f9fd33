"""What the search index costs a transaction on SQLite: a full-text insert per commit against a
queued row per commit and the queue indexed in one transaction (`storage/search.py`).

Each of `-n` transactions inserts a message-like row (as the results' transaction does), plus
either the FTS5 insert of its document (`fts`: how postroom indexed before 26a37fc), a row in a
plain pending table (`queue`: how it does now), or nothing (`none`). For `queue` the pending
rows are then moved into the index in one transaction, as `SearchIndexer` does. The database is
in WAL mode with `synchronous = FULL`, postroom's settings, in `--dir`. Prints µs per
transaction (wall) and, for `queue`, µs per document of the batch.

    python -m bench.search_index --dir /tmp -n 2000 [--words 400]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import string
import tempfile
import time
from pathlib import Path

_FTS = ("CREATE VIRTUAL TABLE message_search USING fts5(subject, addresses, body, "
        "tokenize = 'unicode61 remove_diacritics 2')")


def _documents(n: int, words: int) -> list[str]:
    rng = random.Random(7)
    vocabulary = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))
                  for _ in range(5000)]
    return [" ".join(rng.choices(vocabulary, k=words)) for _ in range(n)]


def measure(directory: Path, mode: str, documents: list[str]) -> dict[str, float]:
    db = sqlite3.connect(directory / f"{mode}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = wal")
    db.execute("PRAGMA synchronous = full")
    db.execute("CREATE TABLE messages (seq INTEGER PRIMARY KEY, row TEXT)")
    db.execute(_FTS)
    db.execute("CREATE TABLE pending (seq INTEGER PRIMARY KEY, subject TEXT, addresses TEXT, "
               "body TEXT)")
    values = ("a subject of some words", "sender@example.org agent@example.net")
    started = time.perf_counter()
    for seq, body in enumerate(documents):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO messages VALUES (?, ?)", (seq, "x" * 200))
        if mode == "fts":
            db.execute("INSERT INTO message_search (rowid, subject, addresses, body) "
                       "VALUES (?, ?, ?, ?)", (seq, *values, body))
        elif mode == "queue":
            db.execute("INSERT INTO pending VALUES (?, ?, ?, ?)", (seq, *values, body))
        db.execute("COMMIT")
    out = {"us_per_transaction": 1e6 * (time.perf_counter() - started) / len(documents)}
    if mode == "queue":
        started = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO message_search (rowid, subject, addresses, body) "
                   "SELECT seq, subject, addresses, body FROM pending")
        db.execute("DELETE FROM pending")
        db.execute("COMMIT")
        out["us_per_document_batched"] = 1e6 * (time.perf_counter() - started) / len(documents)
    db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("-n", type=int, default=2000, help="transactions (default 2000)")
    parser.add_argument("--words", type=int, default=400, help="words a document (default 400)")
    args = parser.parse_args()
    documents = _documents(args.n, args.words)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for mode in ("none", "queue", "fts"):
            result = measure(Path(tmp), mode, documents)
            print(mode, " ".join(f"{k} {v:.0f}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
