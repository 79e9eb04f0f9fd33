"""OpenPGP (SPEC §8): agents' public keys; messages encrypted at rest, their signature check and
attachment manifest; each attachment's digest as stored.

Revision ID: 0005_openpgp
Revises: 0004_message_security
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_openpgp"
down_revision = "0004_message_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("pgp_public_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("pgp_fingerprint", sa.String(40), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("encrypted_to", sa.Text(), nullable=True))
        batch.add_column(sa.Column("signature", sa.Text(), nullable=True))
        batch.add_column(sa.Column("manifest", sa.Text(), nullable=True))
    with op.batch_alter_table("attachments") as batch:
        batch.add_column(sa.Column("stored_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("stored_size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attachments") as batch:
        batch.drop_column("stored_size")
        batch.drop_column("stored_sha256")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("manifest")
        batch.drop_column("signature")
        batch.drop_column("encrypted_to")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("pgp_fingerprint")
        batch.drop_column("pgp_public_key")
