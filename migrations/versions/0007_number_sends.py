"""Index the texts each business number still has to send, in order

Revision ID: 0007_number_sends
Revises: 0006_idempotency_fingerprint
Create Date: 2026-11-22

A number's sender (gateway/number_sender.py) claims its pending texts oldest first, in
batches; this partial index holds only the pending ones, so the claim reads a handful of
index entries whatever the size of the messages table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_number_sends"
down_revision = "0006_idempotency_fingerprint"
branch_labels = None
depends_on = None

PENDING = sa.text("send_state = 'pending'")


def upgrade() -> None:
    op.create_index("ix_messages_due", "messages", ["from_number", "id"],
                    sqlite_where=PENDING, postgresql_where=PENDING)


def downgrade() -> None:
    op.drop_index("ix_messages_due", table_name="messages")
