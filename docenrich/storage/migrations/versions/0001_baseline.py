"""Baseline: the schema as it was before Alembic, per dialect (a new database gets all of it)."""
from __future__ import annotations

from alembic import op

from docenrich.storage.migrations import legacy_postgres, legacy_sqlite

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Run the legacy steps the database lacks: all for a new one, none for one at the last legacy version."""
    conn = op.get_bind()
    (legacy_sqlite if conn.dialect.name == "sqlite" else legacy_postgres).bring_up(conn)
