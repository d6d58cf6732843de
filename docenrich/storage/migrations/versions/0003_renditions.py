"""PostgreSQL keeps the PDF rendering of a document uploaded in another format (SQLite: a file)."""
from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    """The renditions table, unless the migrations before Alembic made it already (their schema 3)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""CREATE TABLE IF NOT EXISTS renditions (
            document_id TEXT PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
            data BYTEA NOT NULL)""")
