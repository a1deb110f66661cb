"""The registry as it was before migrations: dossiers, documents, artifacts, events, batches, code sequences
and the embedded national databases' tables.

A database made by that code (``create_all``) is stamped at this revision by ``hoso db upgrade``.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "batch_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("input_name", sa.String(length=512), nullable=False),
        sa.Column("input_sha256", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("dossier_code", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_batch_items_batch_id", "batch_items", ["batch_id"], unique=False)
    op.create_table(
        "code_sequences",
        sa.Column("agency_code", sa.String(length=40), nullable=False),
        sa.Column("day", sa.String(length=6), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("agency_code", "day"),
    )
    op.create_table(
        "dossiers",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("procedure", sa.String(length=128), nullable=False),
        sa.Column("procedure_code", sa.String(length=64), nullable=True),
        sa.Column("agency_code", sa.String(length=40), nullable=False),
        sa.Column("input_sha256", sa.String(length=64), nullable=False),
        sa.Column("input_name", sa.String(length=512), nullable=False),
        sa.Column("applicant_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("intake_status", sa.String(length=32), nullable=True),
        sa.Column("received_at", UTC_TIME, nullable=False),
        sa.Column("due_at", UTC_TIME, nullable=False),
        sa.Column("completed_at", UTC_TIME, nullable=True),
        sa.Column("returned_at", UTC_TIME, nullable=True),
        sa.Column("receipt_json", sa.JSON(), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("code"),
        sa.UniqueConstraint("input_sha256", "procedure", name="uq_dossiers_input"),
    )
    op.create_index("ix_dossiers_received_at", "dossiers", ["received_at"], unique=False)
    op.create_index("ix_dossiers_state", "dossiers", ["state"], unique=False)
    op.create_table(
        "natdb_citizen_documents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id_number", sa.String(length=12), nullable=False),
        sa.Column("doc_type", sa.String(length=128), nullable=False),
        sa.Column("object_key", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("dossier_code", sa.String(length=64), nullable=False),
        sa.Column("pages", sa.JSON(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("saved_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("id_number", "doc_type", "dossier_code", name="uq_natdb_document"),
    )
    op.create_index(
        "ix_natdb_citizen_documents_id_number", "natdb_citizen_documents", ["id_number"], unique=False
    )
    op.create_table(
        "natdb_citizens",
        sa.Column("id_number", sa.String(length=12), nullable=False),
        sa.Column("full_name", sa.String(length=256), nullable=False),
        sa.Column("date_of_birth", sa.String(length=10), nullable=False),
        sa.Column("gender", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("id_number"),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dossier_code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("object_key", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(["dossier_code"], ["dossiers.code"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dossier_code", "name", name="uq_artifacts_name"),
    )
    op.create_index("ix_artifacts_dossier_code", "artifacts", ["dossier_code"], unique=False)
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dossier_code", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("doc_type", sa.String(length=128), nullable=False),
        sa.Column("pages", sa.JSON(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("field_confidence", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["dossier_code"], ["dossiers.code"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_documents_dossier_code", "documents", ["dossier_code"], unique=False)
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dossier_code", sa.String(length=64), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("from_state", sa.String(length=32), nullable=True),
        sa.Column("to_state", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["dossier_code"], ["dossiers.code"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_events_dossier_code", "events", ["dossier_code"], unique=False)


def downgrade() -> None:
    for index, table in (
        ("ix_events_dossier_code", "events"),
        ("ix_documents_dossier_code", "documents"),
        ("ix_artifacts_dossier_code", "artifacts"),
        ("ix_natdb_citizen_documents_id_number", "natdb_citizen_documents"),
        ("ix_dossiers_state", "dossiers"),
        ("ix_dossiers_received_at", "dossiers"),
        ("ix_batch_items_batch_id", "batch_items"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("events", "documents", "artifacts", "natdb_citizens", "natdb_citizen_documents", "dossiers",
                  "code_sequences", "batch_items"):
        op.drop_table(table)
