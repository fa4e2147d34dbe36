"""revisions.point_sources: who placed each of a label's 37 points (a person, a render, a model)

Revision ID: 0004_point_sources
Revises: 0003_leases
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_point_sources"
down_revision = "0003_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.add_column(sa.Column("point_sources", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("point_sources")
