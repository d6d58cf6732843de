"""One name for the vector column (SQLite's `vector` becomes `embedding`), and older releases refuse the database."""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    """Rename SQLite's vector column; a legacy version past the last one makes older releases say "newer"."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE vectors RENAME COLUMN vector TO embedding")
        op.execute("PRAGMA user_version = 7")
    else:
        op.execute("UPDATE schema_version SET version = 4")
