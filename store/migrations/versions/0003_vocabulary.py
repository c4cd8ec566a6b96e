"""vocabulary: document.stage -> current_tier, document.tier -> answered_by; enum columns are VARCHAR(16)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.drop_index("ix_document_status_stage")
        batch_op.alter_column("stage", new_column_name="current_tier")
        batch_op.alter_column("tier", new_column_name="answered_by")
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.create_index("ix_document_status_tier", ["status", "current_tier"], unique=False)
    with op.batch_alter_table("importjob", schema=None) as batch_op:
        batch_op.alter_column("status", type_=sa.String(length=16), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("importjob", schema=None) as batch_op:
        batch_op.alter_column("status", type_=sa.String(), existing_nullable=False)
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.drop_index("ix_document_status_tier")
        batch_op.alter_column("current_tier", new_column_name="stage")
        batch_op.alter_column("answered_by", new_column_name="tier")
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.create_index("ix_document_status_stage", ["status", "stage"], unique=False)
