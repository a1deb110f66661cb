"""Alembic environment: migrations run on the connection :mod:`storage.schema` hands over, one transaction.

Concurrent upgrades are serialised: SQLite by the registry engine's ``BEGIN IMMEDIATE``, PostgreSQL by a
transaction-scoped advisory lock taken before the current revision is read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from storage.schema import MIGRATION_LOCK, metadata


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata(),
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


if context.is_offline_mode():  # pragma: no cover - hoso always migrates a live connection
    raise SystemExit("hoso runs its migrations online: `hoso db upgrade`")
run_migrations_online()
