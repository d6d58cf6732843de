"""SQLite logs snippets changed in place, so the shared word index can index them again."""
from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    """The change log and its trigger (SQLite only: PostgreSQL's lexical index is a column of the row)."""
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    from docenrich.storage.sqlite.schema import CHANGE_LOG

    for statement in CHANGE_LOG:
        conn.exec_driver_sql(statement)
