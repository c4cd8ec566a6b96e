"""undispatched index: documents waiting for a dispatch, by tier and id (claim_token IS NULL)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 22:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.create_index(
            "ix_document_undispatched",
            ["current_tier", "status", "id"],
            unique=False,
            sqlite_where=sa.text("claim_token IS NULL"),
            postgresql_where=sa.text("claim_token IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.drop_index("ix_document_undispatched")
