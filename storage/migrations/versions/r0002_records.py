"""Records that last: leases on intake reservations (attempts), the ledger of every stored object version
(which attempt wrote it, recorded or not, locked until when), the version each artifact names, and an
audit log that outlives discarded reservations.

Existing artifacts enter the ledger as recorded versions (their version unknown: the current one), so
``hoso fsck --repair`` can lock them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def _record_class(key: str) -> str | None:
    """The record class of an object key (frozen copy of storage.keys.record_class as of this revision)."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != "dossiers":
        return None
    rest = parts[2:]
    if rest[0] == "history" and len(rest) >= 3:
        rest = [{"result": "result.pdf", "digitised": "digitised.pdf"}.get(rest[1], rest[1])]
    return {
        "input": "input", "digitised.pdf": "digitised", "manifest.json": "manifest", "result.pdf": "result",
        "result-approved.pdf": "result", "forms": "form",
    }.get(rest[0])


def upgrade() -> None:
    op.add_column("dossiers", sa.Column("lease_attempt", sa.String(length=40), nullable=True))
    op.add_column("artifacts", sa.Column("version_id", sa.String(length=255), nullable=True))
    op.create_table(
        "attempts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("dossier_code", sa.String(length=64), nullable=True),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.Column("ended_at", UTC_TIME, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_attempts_dossier_code", "attempts", ["dossier_code"], unique=False)
    op.create_index("ix_attempts_state", "attempts", ["state"], unique=False)
    op.create_table(
        "object_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("version_id", sa.String(length=255), nullable=True),
        sa.Column("attempt", sa.String(length=40), nullable=True),
        sa.Column("dossier_code", sa.String(length=64), nullable=True),
        sa.Column("artifact", sa.String(length=128), nullable=True),
        sa.Column("record_class", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("lock_mode", sa.String(length=16), nullable=True),
        sa.Column("retain_until", UTC_TIME, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_object_versions_attempt", "object_versions", ["attempt"], unique=False)
    op.create_index("ix_object_versions_dossier_code", "object_versions", ["dossier_code"], unique=False)
    op.create_index("ix_object_versions_status", "object_versions", ["status"], unique=False)
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("dossier_code", sa.String(length=64), nullable=True),
        sa.Column("attempt", sa.String(length=40), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_dossier_code", "audit_log", ["dossier_code"], unique=False)

    artifacts = sa.table(
        "artifacts", sa.column("dossier_code", sa.String), sa.column("name", sa.String),
        sa.column("object_key", sa.String), sa.column("sha256", sa.String), sa.column("size", sa.BigInteger),
        sa.column("created_at", UTC_TIME),
    )
    ledger = sa.table(
        "object_versions", sa.column("key", sa.String), sa.column("dossier_code", sa.String),
        sa.column("artifact", sa.String), sa.column("record_class", sa.String), sa.column("status", sa.String),
        sa.column("sha256", sa.String), sa.column("size", sa.BigInteger), sa.column("created_at", UTC_TIME),
        sa.column("updated_at", UTC_TIME),
    )
    bind = op.get_bind()
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    rows = [
        {"key": r.object_key, "dossier_code": r.dossier_code, "artifact": r.name,
         "record_class": _record_class(r.object_key), "status": "final", "sha256": r.sha256, "size": r.size,
         "created_at": r.created_at, "updated_at": now}
        for r in bind.execute(sa.select(artifacts))
    ]
    if rows:
        op.bulk_insert(ledger, rows)


def downgrade() -> None:
    op.drop_index("ix_audit_log_dossier_code", table_name="audit_log")
    op.drop_table("audit_log")
    for index in ("ix_object_versions_status", "ix_object_versions_dossier_code", "ix_object_versions_attempt"):
        op.drop_index(index, table_name="object_versions")
    op.drop_table("object_versions")
    op.drop_index("ix_attempts_state", table_name="attempts")
    op.drop_index("ix_attempts_dossier_code", table_name="attempts")
    op.drop_table("attempts")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("version_id")
    with op.batch_alter_table("dossiers") as batch:
        batch.drop_column("lease_attempt")
