"""notifications, the event outbox, and messages.notified_at

Revision ID: 0005_notifications
Revises: 0001

Existing inbound messages are marked notified as of their arrival, so that deploying
this does not tell everyone about every text the gateway ever received.
"""

import sqlalchemy as sa
from alembic import op

import gateway.models

revision = "0005_notifications"
down_revision = "0001"
branch_labels = None
depends_on = None

_id = sa.Integer().with_variant(sa.BigInteger(), "postgresql")
_bigint = sa.Integer().with_variant(sa.BigInteger(), "postgresql")


def _time():
    return gateway.models.AwareDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notified_at", _time(), nullable=True))
        batch_op.create_index(batch_op.f("ix_messages_notified_at"), ["notified_at"], unique=False)
    op.execute("UPDATE messages SET notified_at = created_at WHERE notified_at IS NULL")

    op.create_table(
        "notifications",
        sa.Column("id", _id, nullable=False),
        sa.Column("user_id", _bigint, nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("event_key", sa.String(length=120), nullable=False),
        sa.Column("conversation_id", _bigint, nullable=True),
        sa.Column("message_id", _bigint, nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("read_at", _time(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notifications_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"],
            name=op.f("fk_notifications_conversation_id_conversations"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_notifications_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "user_id", "kind", "event_key", name=op.f("uq_notifications_user_id_kind_event_key")
        ),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_inbox", ["user_id", "read_at", "id"], unique=False)

    op.create_table(
        "event_deliveries",
        sa.Column("id", _id, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=1000), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _time(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", _time(), nullable=True),
        sa.Column("abandoned_at", _time(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_deliveries")),
        sa.UniqueConstraint("event_id", "url", name=op.f("uq_event_deliveries_event_id_url")),
    )
    with op.batch_alter_table("event_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_event_deliveries_due", ["delivered_at", "next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("event_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_event_deliveries_due")
    op.drop_table("event_deliveries")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_inbox")
    op.drop_table("notifications")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_notified_at"))
        batch_op.drop_column("notified_at")
