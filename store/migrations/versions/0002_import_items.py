"""import items: every document an import listed, including those an earlier import stored

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 06:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "importitem",
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["document.id"]),
        sa.ForeignKeyConstraint(["import_id"], ["importjob.id"]),
        sa.PrimaryKeyConstraint("import_id", "document_id"),
    )
    with op.batch_alter_table("importitem", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_importitem_document_id"), ["document_id"], unique=False)
    # Documents stored by an import before this table existed belong to it.
    op.execute(
        "INSERT INTO importitem (import_id, document_id) SELECT import_id, id FROM document"
        " WHERE import_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("importitem", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_importitem_document_id"))
    op.drop_table("importitem")
