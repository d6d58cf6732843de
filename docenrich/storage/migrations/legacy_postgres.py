"""The PostgreSQL schema steps from before Alembic (table schema_version 1 and 2), kept verbatim.

The baseline revision runs the steps a database still lacks: all of them for a new database,
none for one at LEGACY_VERSION, which is so simply taken into the Alembic history.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa

log = logging.getLogger(__name__)

# Counts kept by triggers, as on SQLite, so "how many snippets lack a vector" never scans, and
# removed vectors are logged so an in-memory index can drop rows instead of reloading.
_TRIGGERS = [
    """CREATE FUNCTION snippets_counted() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'INSERT' THEN
           UPDATE counters SET value = value + 1 WHERE name = 'snippets_total';
         ELSE
           UPDATE counters SET value = value - 1 WHERE name = 'snippets_total';
         END IF;
         RETURN NULL;
       END $$""",
    "CREATE TRIGGER snippets_counted AFTER INSERT OR DELETE ON snippets FOR EACH ROW EXECUTE FUNCTION snippets_counted()",
    """CREATE FUNCTION vectors_counted() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'INSERT' THEN
           UPDATE embedders SET vector_count = vector_count + 1 WHERE name = NEW.embedder;
         ELSE
           UPDATE embedders SET vector_count = vector_count - 1 WHERE name = OLD.embedder;
           INSERT INTO vector_removals(snippet_id, embedder) VALUES (OLD.snippet_id, OLD.embedder);
         END IF;
         RETURN NULL;
       END $$""",
    "CREATE TRIGGER vectors_counted AFTER INSERT OR DELETE ON vectors FOR EACH ROW EXECUTE FUNCTION vectors_counted()",
    # New text makes a snippet's sparse weights stale, as on SQLite.
    """CREATE FUNCTION snippets_sparse_stale() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF OLD.text IS DISTINCT FROM NEW.text THEN
           DELETE FROM sparse_postings WHERE snippet_id = NEW.id;
         END IF;
         RETURN NULL;
       END $$""",
    "CREATE TRIGGER snippets_sparse_stale AFTER UPDATE OF text ON snippets FOR EACH ROW EXECUTE FUNCTION snippets_sparse_stale()",
]

# _MIGRATIONS[i] upgrades a database from schema_version i to i + 1.
_MIGRATIONS: list[list[str]] = [
    [
        "CREATE EXTENSION IF NOT EXISTS vector",
        """CREATE TABLE documents (
            id TEXT PRIMARY KEY,
            seq BIGSERIAL UNIQUE,
            sha256 TEXT NOT NULL UNIQUE,
            filename TEXT NOT NULL,
            size BIGINT NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued',
            stage TEXT NOT NULL DEFAULT '',
            progress DOUBLE PRECISION NOT NULL DEFAULT 0,
            pages INTEGER NOT NULL DEFAULT 0,
            title TEXT NOT NULL DEFAULT '',
            producer TEXT NOT NULL DEFAULT '',
            has_text_layer INTEGER,
            metadata TEXT NOT NULL DEFAULT '{}',
            error TEXT,
            snippet_count INTEGER NOT NULL DEFAULT 0,
            batches_total INTEGER,
            batches_done INTEGER NOT NULL DEFAULT 0,
            embedder TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            generation INTEGER NOT NULL DEFAULT 0,
            batch_pages INTEGER
        )""",
        "CREATE INDEX documents_state ON documents(state, updated_at)",
        "CREATE INDEX documents_created ON documents(created_at)",
        # Blobs live in the database so every web and worker host reaches them.
        "CREATE TABLE pdfs (sha256 TEXT PRIMARY KEY, data BYTEA NOT NULL)",
        "CREATE TABLE images (name TEXT PRIMARY KEY, data BYTEA NOT NULL)",
        """CREATE TABLE thumbs (
            document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            page INTEGER NOT NULL,
            width INTEGER NOT NULL,
            data BYTEA NOT NULL,
            PRIMARY KEY (document_id, page, width)
        )""",
        """CREATE TABLE snippets (
            id BIGSERIAL PRIMARY KEY,
            document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            batch_index INTEGER,
            page INTEGER NOT NULL,
            bbox TEXT,
            text TEXT NOT NULL,
            kind TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            image TEXT,
            lex TSVECTOR NOT NULL DEFAULT ''::tsvector,
            UNIQUE (document_id, ordinal)
        )""",
        "CREATE INDEX snippets_batch ON snippets(document_id, batch_index)",
        "CREATE INDEX snippets_image ON snippets(image) WHERE image IS NOT NULL",
        "CREATE INDEX snippets_lex ON snippets USING gin (lex)",
        "CREATE TABLE embedders (name TEXT PRIMARY KEY, dim INTEGER NOT NULL, vector_count BIGINT NOT NULL DEFAULT 0)",
        # One table for every embedder; the column has no fixed dimension, so each dimension
        # gets its own partial HNSW index over an expression cast (vectors.py creates it when
        # the dimension is first registered): a new embedder needs no new table or migration.
        """CREATE TABLE vectors (
            id BIGSERIAL PRIMARY KEY,
            snippet_id BIGINT NOT NULL REFERENCES snippets(id) ON DELETE CASCADE,
            document_id TEXT NOT NULL,
            embedder TEXT NOT NULL REFERENCES embedders(name),
            dim INTEGER NOT NULL,
            embedding vector NOT NULL,
            UNIQUE (snippet_id, embedder)
        )""",
        "CREATE INDEX vectors_embedder ON vectors(embedder, id)",
        "CREATE INDEX vectors_document ON vectors(document_id, embedder)",
        """CREATE TABLE batches (
            document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            batch_index INTEGER NOT NULL,
            snippet_count INTEGER NOT NULL,
            done_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (document_id, batch_index)
        )""",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        """INSERT INTO counters(name, value) VALUES
           ('vectors_version', 0), ('vectors_epoch', 0), ('snippets_total', 0)""",
        "CREATE TABLE vector_removals (seq BIGSERIAL PRIMARY KEY, snippet_id BIGINT NOT NULL, embedder TEXT NOT NULL)",
        """CREATE TABLE sparse_postings (
            embedder TEXT NOT NULL,
            token INTEGER NOT NULL,
            snippet_id BIGINT NOT NULL REFERENCES snippets(id) ON DELETE CASCADE,
            weight REAL NOT NULL,
            PRIMARY KEY (embedder, token, snippet_id)
        )""",
        "CREATE INDEX sparse_postings_snippet ON sparse_postings(snippet_id)",
        *_TRIGGERS,
        "CREATE TABLE collections (name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', created_at DOUBLE PRECISION NOT NULL)",
        """CREATE TABLE document_collections (
            document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
            added_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (document_id, collection)
        )""",
        "CREATE INDEX document_collections_collection ON document_collections(collection, document_id)",
        "INSERT INTO collections(name, created_at) VALUES ('default', extract(epoch FROM now()))",
    ],
    [
        # A page batch given up after repeated failures: done, without snippets, and why.
        "ALTER TABLE batches ADD COLUMN note TEXT",
    ],
]
LEGACY_VERSION = len(_MIGRATIONS)


def legacy_version(conn: sa.Connection) -> int:
    """The version in the schema_version table (0 for a new database)."""
    if conn.exec_driver_sql("SELECT to_regclass('schema_version')").scalar() is None:
        return 0
    return int(conn.exec_driver_sql("SELECT version FROM schema_version").scalar() or 0)


def bring_up(conn: sa.Connection) -> None:
    """Run the legacy steps the database lacks, in the caller's transaction."""
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    if conn.exec_driver_sql("SELECT count(*) FROM schema_version").scalar() == 0:
        conn.exec_driver_sql("INSERT INTO schema_version(version) VALUES (0)")
    for step in range(legacy_version(conn), LEGACY_VERSION):
        for statement in _MIGRATIONS[step]:
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql(f"UPDATE schema_version SET version = {step + 1}")
        log.info("legacy schema step %d applied", step + 1)
