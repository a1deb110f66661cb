"""Archive batches across workers: the work queue of each batch (storage/batches.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "batch_claims",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=True),
        sa.Column("expires_at", UTC_TIME, nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "name"),
    )
    op.create_index("ix_batch_claims_state", "batch_claims", ["batch_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_batch_claims_state", table_name="batch_claims")
    op.drop_table("batch_claims")
