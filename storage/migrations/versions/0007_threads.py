"""Each message's thread (`messages.thread_id`), kept with its headers so a thread's messages
are one indexed read; existing rows get theirs from the headers they already hold.

Revision ID: 0007_threads
Revises: 0006_outbound
Create Date: 2026-12-03
"""

import hashlib
import re

import sqlalchemy as sa
from alembic import op

revision = "0007_threads"
down_revision = "0006_outbound"
branch_labels = None
depends_on = None

_MSG_ID = re.compile(r"<[^<>\s]+>")
_BATCH = 1000


def _thread_id(references: str | None, in_reply_to: str | None, own: str) -> str:
    """daemon.ids.thread_id_of as it was when this revision was written (frozen here)."""
    root = own
    for header in (references, in_reply_to):
        found = _MSG_ID.search(header or "")
        if found:
            root = found.group(0)
            break
    root = root.strip().strip("<>").lower()
    return "thr_" + hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:26]


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("thread_id", sa.String(40), nullable=True))
    op.create_index("ix_messages_thread_id", "messages", ["thread_id"])
    conn = op.get_bind()
    messages = sa.table("messages", sa.column("seq", sa.BigInteger), sa.column("id", sa.String),
                        sa.column("message_id_header", sa.Text),
                        sa.column("in_reply_to", sa.Text),
                        sa.column("references_header", sa.Text),
                        sa.column("thread_id", sa.String))
    after = -1
    while True:  # in batches: a large installation's messages never sit in memory at once
        rows = conn.execute(
            sa.select(messages.c.seq, messages.c.id, messages.c.message_id_header,
                      messages.c.in_reply_to, messages.c.references_header)
            .where(messages.c.seq > after).order_by(messages.c.seq).limit(_BATCH)).all()
        if not rows:
            break
        for seq, message_id, header, in_reply_to, references in rows:
            if header is None and in_reply_to is None and references is None:
                continue  # not extracted yet: extraction sets it
            conn.execute(messages.update().where(messages.c.seq == seq).values(
                thread_id=_thread_id(references, in_reply_to, header or message_id)))
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_messages_thread_id", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("thread_id")
