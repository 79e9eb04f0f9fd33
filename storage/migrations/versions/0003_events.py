"""The event feed (SPEC §6 `GET /v1/events`): one row per state change per agent.

Revision ID: 0003_events
Revises: 0002_uploads
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_events"
down_revision = "0002_uploads"
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", BigInt, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("message_id", sa.String(40), nullable=True),
        sa.Column("attachment_id", sa.String(40), nullable=True),
        sa.Column("index", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_events_agent_seq", "events", ["agent_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_events_agent_seq", "events")
    op.drop_table("events")
