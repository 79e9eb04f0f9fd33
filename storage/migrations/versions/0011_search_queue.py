"""The search index's queue (SPEC §15): a message's results write a plain row here and a
background task moves many rows at a time into `message_search`, so the full-text index is
not written once per results transaction (`storage.search`).

Revision ID: 0011_search_queue
Revises: 0010_content
Create Date: 2026-12-07
"""

from alembic import op

revision = "0011_search_queue"
down_revision = "0010_content"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE message_search_pending (seq BIGINT PRIMARY KEY, "
               "subject TEXT NOT NULL, addresses TEXT NOT NULL, body TEXT NOT NULL)")


def downgrade() -> None:
    # What is still queued goes into the index, as 0010 wrote it: one row per message.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("INSERT INTO message_search (seq, document) SELECT seq, "
                   "setweight(to_tsvector('simple', subject), 'A') || "
                   "setweight(to_tsvector('simple', addresses), 'B') || "
                   "to_tsvector('simple', body) FROM message_search_pending "
                   "ON CONFLICT (seq) DO UPDATE SET document = EXCLUDED.document")
    else:
        op.execute("INSERT OR REPLACE INTO message_search (rowid, subject, addresses, body) "
                   "SELECT seq, subject, addresses, body FROM message_search_pending")
    op.execute("DROP TABLE message_search_pending")
