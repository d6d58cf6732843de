"""Lexical search by word stems: SQLite's FTS5 index gets the porter tokenizer, PostgreSQL's tsvectors hold stems."""
from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

log = logging.getLogger(__name__)

_CHUNK = 2000


def upgrade() -> None:
    """Index every stored snippet again by its words' stems."""
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        _sqlite(conn)
    else:
        _postgres(conn)


def _sqlite(conn: sa.Connection) -> None:
    from docenrich.storage.sqlite.schema import FTS_TOKENIZER, STATEMENTS, _context

    found = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'snippets_fts'").scalar()
    if found is not None and FTS_TOKENIZER in found:
        return
    for trigger in ("snippets_fts_insert", "snippets_fts_delete", "snippets_fts_update"):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
    conn.exec_driver_sql("DROP TABLE IF EXISTS snippets_fts")
    for statement in STATEMENTS[:4]:  # the FTS5 table and the three triggers that keep it
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql(f"INSERT INTO snippets_fts(rowid, text, context) SELECT s.id, s.text, {_context('s')} "
                         "FROM snippets s")
    log.info("lexical index rebuilt by word stems")


def _postgres(conn: sa.Connection) -> None:
    from docenrich.storage.encoding import json_load
    from docenrich.storage.postgres.store import lex_vector

    select = sa.text("SELECT s.id, s.text, s.meta, d.title FROM snippets s JOIN documents d ON d.id = s.document_id "
                     "WHERE s.id > :after ORDER BY s.id LIMIT :n")
    update = sa.text("UPDATE snippets SET lex = CAST(:lex AS tsvector) WHERE id = :id")
    after, done = 0, 0
    while True:
        rows = conn.execute(select, {"after": after, "n": _CHUNK}).all()
        if not rows:
            break
        conn.execute(update, [{"id": r.id, "lex": lex_vector(r.text, json_load(r.meta, {}).get("heading"), r.title)}
                              for r in rows])
        after, done = rows[-1].id, done + len(rows)
    if done:
        log.info("lexical vectors of %d snippets computed again from word stems", done)
