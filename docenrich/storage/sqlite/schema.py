"""What a new SQLite database has beyond the shared tables: the FTS5 index and the triggers.

unicode61 folds case and diacritics in every script that separates words with spaces; it splits
identifiers at "_", ".", "-" and "(", and the query side turns such an identifier into a phrase
of its parts (fts_query), so R_MAKEVARS_USER matches itself exactly and MAKEVARS alone finds it.
"""
from __future__ import annotations

import sqlalchemy as sa

from docenrich.storage.tables import BLOB_TABLES, metadata

# porter: words are indexed and matched by their stems ("vanishes" finds "vanish", "computing" finds
# "Compute"), as PostgreSQL's lexical index does (storage/terms.stem).
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
# What older docenrich releases read as "a newer schema", so they refuse the database.
LEGACY_MARK = 7


def _context(row: str) -> str:
    """SQL for a snippet row's indexed context: its section heading and its document's title."""
    return (f"trim(coalesce(CASE WHEN json_valid({row}.meta) THEN json_extract({row}.meta, '$.heading') END, '')"
            f" || ' ' || coalesce((SELECT title FROM documents d WHERE d.id = {row}.document_id), ''))")


# Snippets whose text, context or document changed in place (a batch saved again), and snippets
# whose sparse postings were written: the postings indexes (textindex/) index them again. Snippet
# ids only grow, so new snippets need no log of their own.
CHANGE_LOG = [
    "CREATE TABLE IF NOT EXISTS sparse_changes (seq INTEGER PRIMARY KEY, embedder TEXT NOT NULL, "
    "snippet_id INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS text_changes (seq INTEGER PRIMARY KEY, snippet_id INTEGER NOT NULL)",
    """CREATE TRIGGER IF NOT EXISTS snippets_text_changed AFTER UPDATE OF text, meta, document_id ON snippets
        WHEN old.text IS NOT new.text OR old.meta IS NOT new.meta OR old.document_id IS NOT new.document_id BEGIN
        INSERT INTO text_changes(snippet_id) VALUES (new.id); END""",
]

# Triggers keep the FTS5 index (text, and context as a second column), the counts and the
# removal log in step with the rows, in the same transaction as every insert, update and delete.
STATEMENTS = [
    f"CREATE VIRTUAL TABLE snippets_fts USING fts5(text, context, tokenize = '{FTS_TOKENIZER}')",
    f"""CREATE TRIGGER snippets_fts_insert AFTER INSERT ON snippets BEGIN
        INSERT INTO snippets_fts(rowid, text, context) VALUES (new.id, new.text, {_context('new')}); END""",
    """CREATE TRIGGER snippets_fts_delete AFTER DELETE ON snippets BEGIN
        DELETE FROM snippets_fts WHERE rowid = old.id; END""",
    f"""CREATE TRIGGER snippets_fts_update AFTER UPDATE OF text, meta, document_id ON snippets BEGIN
        DELETE FROM snippets_fts WHERE rowid = old.id;
        INSERT INTO snippets_fts(rowid, text, context) VALUES (new.id, new.text, {_context('new')}); END""",
    """CREATE TRIGGER snippets_sparse_stale AFTER UPDATE OF text ON snippets WHEN old.text IS NOT new.text BEGIN
        DELETE FROM sparse_postings WHERE snippet_id = new.id; END""",
    """CREATE TRIGGER snippets_counted AFTER INSERT ON snippets BEGIN
        UPDATE counters SET value = value + 1 WHERE name = 'snippets_total'; END""",
    """CREATE TRIGGER snippets_uncounted AFTER DELETE ON snippets BEGIN
        UPDATE counters SET value = value - 1 WHERE name = 'snippets_total'; END""",
    """CREATE TRIGGER vectors_counted AFTER INSERT ON vectors BEGIN
        UPDATE embedders SET vector_count = vector_count + 1 WHERE name = new.embedder; END""",
    """CREATE TRIGGER vectors_uncounted AFTER DELETE ON vectors BEGIN
        UPDATE embedders SET vector_count = vector_count - 1 WHERE name = old.embedder;
        INSERT INTO vector_removals(snippet_id, embedder) VALUES (old.snippet_id, old.embedder); END""",
    # Snippet ids are never reused: new snippets take the next value of a counter that only grows.
    """CREATE TRIGGER snippets_id_seq AFTER INSERT ON snippets BEGIN
        UPDATE counters SET value = max(value, new.id) WHERE name = 'snippet_id_seq'; END""",
    *CHANGE_LOG,
    f"PRAGMA user_version = {LEGACY_MARK}",
]


def create(conn: sa.Connection) -> None:
    """Create a new database's schema (content lives in files: no blob tables)."""
    metadata.create_all(conn, tables=[t for t in metadata.sorted_tables if t not in BLOB_TABLES])
    for statement in STATEMENTS:
        conn.exec_driver_sql(statement)
