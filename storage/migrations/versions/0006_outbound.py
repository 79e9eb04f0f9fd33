"""Outbound mail (SPEC §12): each message's direction, one delivery row per recipient of an
outbound message, the answers kept for `Idempotency-Key`, and the directory of external peers.

Revision ID: 0006_outbound
Revises: 0005_openpgp
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_outbound"
down_revision = "0005_openpgp"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("direction", sa.String(16), nullable=False,
                                   server_default="inbound"))
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("local", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("delivered_message_id", sa.String(40), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("message_id", "address"),
    )
    op.create_index("ix_deliveries_message_id", "deliveries", ["message_id"])
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("agent_id", "key"),
    )
    op.create_table(
        "directory",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("pgp_public_key", sa.Text(), nullable=True),
        sa.Column("pgp_fingerprint", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("directory")
    op.drop_table("idempotency_keys")
    op.drop_table("deliveries")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("direction")
