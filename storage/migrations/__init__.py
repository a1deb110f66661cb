"""Alembic migrations of the registry schema (run programmatically: :mod:`storage.schema`)."""
