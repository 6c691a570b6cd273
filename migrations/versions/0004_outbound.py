"""outbound: send bookkeeping on messages, idempotency keys, status events

Revision ID: 0004_outbound
Revises: 0001

Written by hand. Additive only: the new message columns are nullable or have a server
default, so the previous release keeps working against this schema.
"""

import sqlalchemy as sa
from alembic import op

import gateway.models

revision = "0004_outbound"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("encoding", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("send_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("send_attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("attempted_at", gateway.models.AwareDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_messages_unsent", ["created_at"], unique=False,
            sqlite_where=sa.text("send_state IN ('pending', 'in_flight')"),
            postgresql_where=sa.text("send_state IN ('pending', 'in_flight')"),
        )

    op.create_table(
        "idempotency_keys",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("message_id", ID, nullable=False),
        sa.Column("created_at", gateway.models.AwareDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"],
                                name=op.f("fk_idempotency_keys_message_id_messages"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_idempotency_keys_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("user_id", "key", name=op.f("uq_idempotency_keys_user_id_key")),
    )
    op.create_table(
        "status_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("carrier", sa.String(length=64), nullable=False),
        sa.Column("carrier_message_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("carrier_status", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.String(length=16), nullable=True),
        sa.Column("message_id", ID, nullable=True),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", gateway.models.AwareDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"],
                                name=op.f("fk_status_events_message_id_messages"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_events")),
    )
    with op.batch_alter_table("status_events", schema=None) as batch_op:
        batch_op.create_index("ix_status_events_message", ["carrier_message_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("status_events", schema=None) as batch_op:
        batch_op.drop_index("ix_status_events_message")
    op.drop_table("status_events")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_unsent")
        batch_op.drop_column("attempted_at")
        batch_op.drop_column("send_attempts")
        batch_op.drop_column("send_state")
        batch_op.drop_column("encoding")
