"""The registry's schema version: Alembic migrations (``storage/migrations``), run programmatically.

``hoso db upgrade`` brings a database to the newest revision (a database made before migrations
existed is stamped at the first revision, which is its schema, then upgraded); ``hoso db current`` says
where it is. :class:`storage.registry.Registry` upgrades an empty database by itself, so a first run
needs nothing else.
"""

from __future__ import annotations

import logging
from typing import Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

SCRIPT_LOCATION = "storage:migrations"
#: The revision whose schema is what the registry created before migrations (``create_all``).
BASELINE = "0001"
VERSION_TABLE = "alembic_version"
MIGRATION_LOCK = 0x686F736F  # "hoso": the PostgreSQL advisory lock key of migrations

SchemaState = Literal["empty", "unversioned", "behind", "current", "ahead"]


def metadata() -> sa.MetaData:
    """Every table of the registry's database: the registry's own, the identity tables and the embedded
    national databases' (all declared on one base)."""
    import storage.batches  # noqa: F401  (the archive batches' work queue too)
    import storage.identity  # noqa: F401  (users, tokens, lookup secrets and claims live on the registry's base)
    from storage.registry import Base

    return Base.metadata


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this code knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    if revision is None:  # pragma: no cover - the package always ships its migrations
        raise RuntimeError("no migrations found in storage/migrations")
    return revision


def known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except Exception:
        return False


def _serialise(conn: sa.Connection) -> None:
    """Hold the migration lock for this transaction (SQLite: its BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


def _state(conn: sa.Connection) -> tuple[SchemaState, str | None]:
    tables = set(sa.inspect(conn).get_table_names())
    revision = MigrationContext.configure(conn).get_current_revision() if VERSION_TABLE in tables else None
    if revision is None:
        return ("unversioned" if tables - {VERSION_TABLE} else "empty"), None
    if revision == head():
        return "current", revision
    return ("behind" if known(revision) else "ahead"), revision


def state(engine: sa.Engine) -> tuple[SchemaState, str | None]:
    """Where the database stands against :func:`head`, and its revision (None: never migrated)."""
    with engine.connect() as conn:
        return _state(conn)


def current(engine: sa.Engine) -> str | None:
    """The database's revision (None: never migrated)."""
    return state(engine)[1]


def upgrade(engine: sa.Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``revision`` in one transaction; returns (before, after).

    Concurrent upgrades queue on the migration lock and find the work done. A database made before
    migrations existed is stamped at :data:`BASELINE` (its schema) first.
    """
    with engine.begin() as conn:
        _serialise(conn)
        now, before = _state(conn)
        if now == "ahead":
            raise RuntimeError(f"the registry is at revision {before}, which this hoso does not know (newer code?)")
        config = _config(conn)
        if now == "unversioned":
            log.warning("registry has tables but no schema version: stamping it at %s (its schema)", BASELINE)
            command.stamp(config, BASELINE)
        command.upgrade(config, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after
