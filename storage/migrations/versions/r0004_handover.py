"""Hand-over of legacy dossiers: a dossier's legacy code (unique, indexed), the old unit it came from and the
batch that handed it over; the signed hand-over record of each batch (``handover_records``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("dossiers") as batch:
        batch.add_column(sa.Column("legacy_code", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("handed_over_from", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("handover_batch", sa.String(length=64), nullable=True))
    op.create_index("ix_dossiers_legacy_code", "dossiers", ["legacy_code"], unique=True)
    op.create_index("ix_dossiers_handover_batch", "dossiers", ["handover_batch"], unique=False)
    op.create_table(
        "handover_records",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("object_key", sa.String(length=1024), nullable=False),
        sa.Column("version_id", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("handed_over", sa.Integer(), nullable=False),
        sa.Column("already_done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("batch_id"),
    )


def downgrade() -> None:
    op.drop_table("handover_records")
    op.drop_index("ix_dossiers_handover_batch", table_name="dossiers")
    op.drop_index("ix_dossiers_legacy_code", table_name="dossiers")
    with op.batch_alter_table("dossiers") as batch:
        batch.drop_column("handover_batch")
        batch.drop_column("handed_over_from")
        batch.drop_column("legacy_code")
