"""What a new PostgreSQL database has beyond the shared tables: pgvector, the tsvector column, triggers."""
from __future__ import annotations

import sqlalchemy as sa

from docenrich.storage.tables import metadata

# What older docenrich releases read as "a newer schema", so they refuse the database.
LEGACY_MARK = 4

# Counts kept by triggers, as on SQLite, so "how many snippets lack a vector" never scans; removed
# vectors are logged so an in-memory index can drop rows instead of reloading; new text makes a
# snippet's sparse weights stale.
_FUNCTIONS = {
    "snippets_counted": ("AFTER INSERT OR DELETE ON snippets", """
        IF TG_OP = 'INSERT' THEN UPDATE counters SET value = value + 1 WHERE name = 'snippets_total';
        ELSE UPDATE counters SET value = value - 1 WHERE name = 'snippets_total'; END IF;"""),
    "vectors_counted": ("AFTER INSERT OR DELETE ON vectors", """
        IF TG_OP = 'INSERT' THEN UPDATE embedders SET vector_count = vector_count + 1 WHERE name = NEW.embedder;
        ELSE
          UPDATE embedders SET vector_count = vector_count - 1 WHERE name = OLD.embedder;
          INSERT INTO vector_removals(snippet_id, embedder) VALUES (OLD.snippet_id, OLD.embedder);
        END IF;"""),
    "snippets_sparse_stale": ("AFTER UPDATE OF text ON snippets", """
        IF OLD.text IS DISTINCT FROM NEW.text THEN DELETE FROM sparse_postings WHERE snippet_id = NEW.id; END IF;"""),
}

STATEMENTS = [
    # Insertion order of documents (SQLite has its rowid), and the lexical index.
    "ALTER TABLE documents ADD COLUMN seq BIGSERIAL UNIQUE",
    "ALTER TABLE snippets ADD COLUMN lex TSVECTOR NOT NULL DEFAULT ''::tsvector",
    "CREATE INDEX snippets_lex ON snippets USING gin (lex)",
    *(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"
      for name, (_, body) in _FUNCTIONS.items()),
    *(f"CREATE TRIGGER {name} {when} FOR EACH ROW EXECUTE FUNCTION {name}()"
      for name, (when, _) in _FUNCTIONS.items()),
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    f"INSERT INTO schema_version(version) VALUES ({LEGACY_MARK})",
]


def create(conn: sa.Connection) -> None:
    """Create a new database's schema, the vector extension first (the vectors table needs its type)."""
    conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
    metadata.create_all(conn)
    for statement in STATEMENTS:
        conn.exec_driver_sql(statement)
