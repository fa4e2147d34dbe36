"""revisions.supersedes: a revoked revision names the revision it takes back

Revision ID: 0002_revision_supersedes
Revises: 0001
Create Date: 2026-12-01 08:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_revision_supersedes"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.add_column(sa.Column("supersedes", sa.Integer(), nullable=True))
        batch.create_index("ix_revisions_supersedes", ["supersedes"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.drop_index("ix_revisions_supersedes")
        batch.drop_column("supersedes")
