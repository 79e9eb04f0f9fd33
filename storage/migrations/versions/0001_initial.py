"""The first tables: agents, addresses, messages, recipients, attachments.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_agents_key_hash", "agents", ["key_hash"])
    op.create_table(
        "addresses",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
    )
    op.create_index("ix_addresses_agent_id", "addresses", ["agent_id"])
    op.create_table(
        "messages",
        sa.Column("seq", BigInt, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("dedupe_key", sa.String(64), nullable=True, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("mail_from", sa.Text(), nullable=False),
        sa.Column("peer", sa.String(100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("raw_key", sa.String(200), nullable=False),
        sa.Column("raw_sha256", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("from_header", sa.Text(), nullable=True),
        sa.Column("to_header", sa.Text(), nullable=True),
        sa.Column("cc_header", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("date_header", sa.Text(), nullable=True),
        sa.Column("message_id_header", sa.Text(), nullable=True),
        sa.Column("in_reply_to", sa.Text(), nullable=True),
        sa.Column("references_header", sa.Text(), nullable=True),
        sa.Column("text_key", sa.String(200), nullable=True),
        sa.Column("text_size", sa.Integer(), nullable=True),
        sa.Column("html_key", sa.String(200), nullable=True),
        sa.Column("html_size", sa.Integer(), nullable=True),
        sa.Column("attachment_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("defects", sa.Text(), nullable=False, server_default="[]"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_messages_unfinished", "messages", ["status", "lease_expires_at"])
    op.create_table(
        "recipients",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_seq", BigInt, nullable=False),
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("tag", sa.String(320), nullable=True),
        sa.UniqueConstraint("message_seq", "address"),
    )
    op.create_index("ix_recipients_agent_seq", "recipients", ["agent_id", "message_seq"])
    op.create_index("ix_recipients_message_id", "recipients", ["message_id"])
    op.create_table(
        "attachments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("original_file_name", sa.Text(), nullable=True),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("detected_content_type", sa.String(255), nullable=True),
        sa.Column("content_type_mismatch", sa.Boolean(), nullable=False),
        sa.Column("disposition", sa.String(32), nullable=True),
        sa.Column("content_id", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("parent", sa.Integer(), nullable=True),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("encryption", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("defects", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("object_key", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("message_id", "index"),
    )


def downgrade() -> None:
    for table in ("attachments", "recipients", "messages", "addresses", "agents"):
        op.drop_table(table)
