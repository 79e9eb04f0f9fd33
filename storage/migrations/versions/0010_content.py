"""What an agent reads (SPEC §15): each message's new part, preview and subject key, each
attachment's text, and the full-text index, filled here with what existing rows already hold
(subject and addresses, and the thread each message's own Message-ID names, `own_thread`,
so a reply finds the thread its parent is in). Their bodies and attachments are read again by
`postroom reprocess --content`, which extracts them from their raw objects.

Revision ID: 0010_content
Revises: 0009_webhooks
Create Date: 2026-12-06
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0010_content"
down_revision = "0009_webhooks"
branch_labels = None
depends_on = None

_BATCH = 1000


def _own_thread(own: str) -> str:
    """daemon.ids.thread_id_for as it was when this revision was written (frozen here)."""
    root = own.strip().strip("<>").lower()
    return "thr_" + hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:26]


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("extracted_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("extracted_size", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("preview", sa.Text(), nullable=True))
        batch.add_column(sa.Column("subject_key", sa.String(32), nullable=True))
        batch.add_column(sa.Column("own_thread", sa.String(40), nullable=True))
    op.create_index("ix_messages_subject_key", "messages", ["subject_key"])
    op.create_index("ix_messages_own_thread", "messages", ["own_thread"])
    with op.batch_alter_table("attachments") as batch:
        batch.add_column(sa.Column("text_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("text_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("text_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("text_truncated", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("text_error", sa.Text(), nullable=True))
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("CREATE TABLE message_search (seq BIGINT PRIMARY KEY, "
                   "document TSVECTOR NOT NULL)")
        op.execute("CREATE INDEX ix_message_search ON message_search USING GIN (document)")
        insert = sa.text(
            "INSERT INTO message_search (seq, document) VALUES (:seq, "
            "setweight(to_tsvector('simple', :subject), 'A') || "
            "setweight(to_tsvector('simple', :addresses), 'B'))")
    else:
        op.execute("CREATE VIRTUAL TABLE message_search USING fts5(subject, addresses, body, "
                   "tokenize = 'unicode61 remove_diacritics 2')")
        insert = sa.text("INSERT INTO message_search (rowid, subject, addresses, body) "
                         "VALUES (:seq, :subject, :addresses, '')")
    conn = op.get_bind()
    after = 0
    while True:
        rows = conn.execute(sa.text(
            "SELECT seq, subject, from_header, to_header, cc_header, mail_from, "
            "message_id_header, id, thread_id FROM messages "
            "WHERE seq > :after AND status != 'purged' ORDER BY seq LIMIT :n"),
            {"after": after, "n": _BATCH}).all()
        if not rows:
            break
        conn.execute(insert, [{"seq": r[0], "subject": r[1] or "",
                               "addresses": " ".join(filter(None, r[2:6]))} for r in rows])
        conn.execute(sa.text("UPDATE messages SET own_thread = :own WHERE seq = :seq"),
                     [{"seq": r[0], "own": _own_thread(r[6] or r[7])} for r in rows
                      if r[6] is not None or r[8] is not None])
        after = rows[-1][0]


def downgrade() -> None:
    op.execute("DROP TABLE message_search")
    with op.batch_alter_table("attachments") as batch:
        for name in ("text_error", "text_truncated", "text_size", "text_key", "text_status"):
            batch.drop_column(name)
    op.drop_index("ix_messages_subject_key", table_name="messages")
    op.drop_index("ix_messages_own_thread", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        for name in ("own_thread", "subject_key", "preview", "extracted_size", "extracted_key"):
            batch.drop_column(name)
