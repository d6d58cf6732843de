"""Baseline: the schema as the migrations before Alembic left it (SQLite user_version 6, PostgreSQL
schema_version 2). Such a database is stamped here; a new one is created at the head instead."""
from __future__ import annotations

revision = "0001"
down_revision = None


def upgrade() -> None:
    """Nothing to do: this revision names the schema the database already has."""
