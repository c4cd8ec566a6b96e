"""text embeddings: each text's sentence embedding per embedder, so a retrain never embeds a text twice

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 11:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "textembedding",
        sa.Column("embedder", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("text_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("embedder", "text_hash"),
    )


def downgrade() -> None:
    op.drop_table("textembedding")
