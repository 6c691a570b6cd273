"""Merge the feature heads; fingerprint idempotency keys; order STOP/START by arrival

Revision ID: 0006_idempotency_fingerprint
Revises: 0003_media, 0004_outbound, 0005_notifications
Create Date: 2026-11-22

The media, outbound and notification migrations were written side by side off 0001;
this revision joins them into one head. It also records a fingerprint of the request an
Idempotency-Key first came with, so the same key with another request is refused. Keys
stored before this revision have none and keep answering as before. And it records when
the STOP/START last applied to a contact arrived, so that a keyword handled out of order
(two workers, a re-enqueued backlog) cannot undo a later one.
"""

import sqlalchemy as sa
from alembic import op

import gateway.models

revision = "0006_idempotency_fingerprint"
down_revision = ("0003_media", "0004_outbound", "0005_notifications")
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
    keyword_at = sa.Column("keyword_at", gateway.models.AwareDateTime(timezone=True), nullable=True)
    with op.batch_alter_table("contacts") as batch_op:
        batch_op.add_column(keyword_at)


def downgrade() -> None:
    with op.batch_alter_table("contacts") as batch_op:
        batch_op.drop_column("keyword_at")
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.drop_column("request_hash")
