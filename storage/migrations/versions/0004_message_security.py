"""What a message says of itself: PGP/MIME or S/MIME, "encrypted" or "signed" (SPEC §8).

Revision ID: 0004_message_security
Revises: 0003_events
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_message_security"
down_revision = "0003_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("pgp", sa.String(16), nullable=True))
        batch.add_column(sa.Column("smime", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("smime")
        batch.drop_column("pgp")
