"""Sender authentication (SPEC §13): the identities SPF checks (the client's address, from the
peer, PROXY or XFORWARD, and its HELO name), each message's `authentication` object and its
`verdict` (indexed: `GET /v1/messages?verdict=`; also on `message.received` events), whether
its message.received is recorded yet (`announced`: after verification, once), and each
agent's `accept` setting.

Revision ID: 0008_sender_auth
Revises: 0007_threads
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_sender_auth"
down_revision = "0007_threads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("client_ip", sa.String(64), nullable=True))
        batch.add_column(sa.Column("helo", sa.Text(), nullable=True))
        batch.add_column(sa.Column("authentication", sa.Text(), nullable=True))
        batch.add_column(sa.Column("verdict", sa.String(16), nullable=True))
        batch.add_column(sa.Column("announced", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.create_index("ix_messages_verdict", "messages", ["verdict"])
    # Mail stored before this revision had its message.received recorded at ingest.
    op.execute(sa.text("UPDATE messages SET announced = :yes").bindparams(yes=True))
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("accept", sa.String(16), nullable=False,
                                   server_default="all"))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("verdict", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("verdict")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("accept")
    op.drop_index("ix_messages_verdict", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("announced")
        batch.drop_column("verdict")
        batch.drop_column("authentication")
        batch.drop_column("helo")
        batch.drop_column("client_ip")
