"""The dossier lifecycle: the role and detail of each event, users with roles, API tokens, lookup secrets
and the claims steps hold on dossiers (storage/identity.py).

A registry made before migrations by code that already had the lifecycle (``create_all``) has some of
this: only what is missing is added.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    columns = {c["name"] for c in inspector.get_columns("events")}
    if "role" not in columns:
        op.add_column("events", sa.Column("role", sa.String(length=32), nullable=True))
    if "detail" not in columns:
        op.add_column("events", sa.Column("detail", sa.JSON(), nullable=True))
    if "users" not in tables:
        op.create_table(
            "users",
            sa.Column("username", sa.String(length=64), nullable=False),
            sa.Column("display_name", sa.String(length=200), nullable=False),
            sa.Column("roles", sa.JSON(), nullable=False),
            sa.Column("password_hash", sa.String(length=255), nullable=True),
            sa.Column("active", sa.Boolean(), nullable=False),
            sa.Column("created_at", UTC_TIME, nullable=False),
            sa.Column("updated_at", UTC_TIME, nullable=False),
            sa.PrimaryKeyConstraint("username"),
        )
    if "api_tokens" not in tables:
        op.create_table(
            "api_tokens",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("username", sa.String(length=64), nullable=False),
            sa.Column("token_hash", sa.String(length=64), nullable=False),
            sa.Column("scope", sa.String(length=32), nullable=False),
            sa.Column("label", sa.String(length=200), nullable=True),
            sa.Column("created_at", UTC_TIME, nullable=False),
            sa.Column("expires_at", UTC_TIME, nullable=True),
            sa.Column("revoked_at", UTC_TIME, nullable=True),
            sa.Column("last_used_at", UTC_TIME, nullable=True),
            sa.ForeignKeyConstraint(["username"], ["users.username"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("token_hash"),
        )
        op.create_index("ix_api_tokens_username", "api_tokens", ["username"], unique=False)
    if "dossier_claims" not in tables:
        op.create_table(
            "dossier_claims",
            sa.Column("dossier_code", sa.String(length=64), nullable=False),
            sa.Column("action", sa.String(length=64), nullable=False),
            sa.Column("holder", sa.String(length=128), nullable=False),
            sa.Column("token", sa.String(length=64), nullable=False),
            sa.Column("claimed_at", UTC_TIME, nullable=False),
            sa.Column("expires_at", UTC_TIME, nullable=False),
            sa.ForeignKeyConstraint(["dossier_code"], ["dossiers.code"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("dossier_code"),
        )
    if "lookup_secrets" not in tables:
        op.create_table(
            "lookup_secrets",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("dossier_code", sa.String(length=64), nullable=False),
            sa.Column("secret_hash", sa.String(length=64), nullable=False),
            sa.Column("form", sa.String(length=128), nullable=False),
            sa.Column("created_at", UTC_TIME, nullable=False),
            sa.ForeignKeyConstraint(["dossier_code"], ["dossiers.code"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("secret_hash"),
        )
        op.create_index("ix_lookup_secrets_dossier_code", "lookup_secrets", ["dossier_code"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_lookup_secrets_dossier_code", table_name="lookup_secrets")
    op.drop_table("lookup_secrets")
    op.drop_table("dossier_claims")
    op.drop_index("ix_api_tokens_username", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("detail")
        batch.drop_column("role")
