"""media: attachments are enqueued like events; images can be linked to folders

Revision ID: 0003_media
Revises: 0001

Additive only: a nullable column, an index and a new table, so the previous release
keeps working against the upgraded schema.
"""

import sqlalchemy as sa
from alembic import op

import gateway.models

revision = "0003_media"
down_revision = "0001"
branch_labels = None
depends_on = None


def _id():
    return sa.Integer().with_variant(sa.BigInteger(), "postgresql")


def _time():
    return gateway.models.AwareDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("enqueued_at", _time(), nullable=True))
        batch_op.create_index("ix_attachments_pending", ["status", "created_at"], unique=False)

    op.create_table(
        "folder_photos",
        sa.Column("id", _id(), nullable=False),
        sa.Column("folder_id", _id(), nullable=False),
        sa.Column("attachment_id", _id(), nullable=False),
        sa.Column("linked_by_id", _id(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["attachment_id"], ["attachments.id"],
            name=op.f("fk_folder_photos_attachment_id_attachments"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["folder_id"], ["folders.id"],
            name=op.f("fk_folder_photos_folder_id_folders"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["linked_by_id"], ["users.id"],
            name=op.f("fk_folder_photos_linked_by_id_users"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_folder_photos")),
        sa.UniqueConstraint(
            "folder_id", "attachment_id", name=op.f("uq_folder_photos_folder_id_attachment_id")
        ),
    )
    with op.batch_alter_table("folder_photos", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_folder_photos_attachment_id"), ["attachment_id"], unique=False)
        batch_op.create_index("ix_folder_photos_folder", ["folder_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("folder_photos", schema=None) as batch_op:
        batch_op.drop_index("ix_folder_photos_folder")
        batch_op.drop_index(batch_op.f("ix_folder_photos_attachment_id"))
    op.drop_table("folder_photos")
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.drop_index("ix_attachments_pending")
        batch_op.drop_column("enqueued_at")
