"""The schema as docenrich created it before Alembic, step by step as its migrations did (SQLite
PRAGMA user_version 1-6, PostgreSQL schema_version 1-2), kept verbatim to build such a database."""
from __future__ import annotations

import numpy as np

from tests.storeutil import DIM, make_batch

FTS_TOKENIZER = "unicode61 remove_diacritics 2"


def _context(row: str) -> str:
    """SQL for a snippet row's indexed context: its section heading and its document's title."""
    return (
        f"trim(coalesce(CASE WHEN json_valid({row}.meta) THEN json_extract({row}.meta, '$.heading') END, '')"
        f" || ' ' || coalesce((SELECT title FROM documents d WHERE d.id = {row}.document_id), ''))"
    )


# _SQLITE[i] upgrades a database from user_version i to i + 1.
_SQLITE: list[list[str]] = [
    [
        """CREATE TABLE documents (
            id TEXT PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            filename TEXT NOT NULL,
            size INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued',
            stage TEXT NOT NULL DEFAULT '',
            progress REAL NOT NULL DEFAULT 0,
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
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX documents_state ON documents(state, updated_at)",
        "CREATE INDEX documents_created ON documents(created_at)",
        """CREATE TABLE snippets (
            id INTEGER PRIMARY KEY,
            document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            batch_index INTEGER,
            page INTEGER NOT NULL,
            bbox TEXT,
            text TEXT NOT NULL,
            kind TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            image TEXT,
            UNIQUE (document_id, ordinal)
        )""",
        "CREATE INDEX snippets_batch ON snippets(document_id, batch_index)",
        "CREATE INDEX snippets_image ON snippets(image) WHERE image IS NOT NULL",
        """CREATE TABLE embedders (
            name TEXT PRIMARY KEY,
            dim INTEGER NOT NULL
        )""",
        # AUTOINCREMENT: ids are never reused, so "id > last loaded" finds exactly the new rows.
        """CREATE TABLE vectors (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            snippet_id INTEGER NOT NULL REFERENCES snippets(id) ON DELETE CASCADE,
            document_id TEXT NOT NULL,
            embedder TEXT NOT NULL REFERENCES embedders(name),
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            UNIQUE (snippet_id, embedder)
        )""",
        "CREATE INDEX vectors_embedder ON vectors(embedder, id)",
        "CREATE INDEX vectors_document ON vectors(document_id)",
        """CREATE TABLE batches (
            document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            batch_index INTEGER NOT NULL,
            snippet_count INTEGER NOT NULL,
            done_at REAL NOT NULL,
            PRIMARY KEY (document_id, batch_index)
        )""",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        # vectors_version: bumped by any vector change; vectors_epoch: bumped when a
        # vector is removed or replaced (an index must then reload instead of append).
        "INSERT INTO counters(name, value) VALUES ('vectors_version', 0), ('vectors_epoch', 0)",
    ],
    # The lexical indexes. FTS5 over each snippet's text, and its context (section heading and
    # document title) as a second column. Triggers keep it in step with the snippets table, so
    # every insert, update and delete (cascades included) reaches it in the same transaction;
    # the last statement fills it for a database that already holds snippets.
    [
        f"CREATE VIRTUAL TABLE snippets_fts USING fts5(text, context, tokenize = '{FTS_TOKENIZER}')",
        f"""CREATE TRIGGER snippets_fts_insert AFTER INSERT ON snippets BEGIN
            INSERT INTO snippets_fts(rowid, text, context) VALUES (new.id, new.text, {_context('new')});
        END""",
        """CREATE TRIGGER snippets_fts_delete AFTER DELETE ON snippets BEGIN
            DELETE FROM snippets_fts WHERE rowid = old.id;
        END""",
        f"""CREATE TRIGGER snippets_fts_update AFTER UPDATE OF text, meta, document_id ON snippets BEGIN
            DELETE FROM snippets_fts WHERE rowid = old.id;
            INSERT INTO snippets_fts(rowid, text, context) VALUES (new.id, new.text, {_context('new')});
        END""",
        f"INSERT INTO snippets_fts(rowid, text, context) SELECT s.id, s.text, {_context('s')} FROM snippets s",
        # Learned sparse vectors (BGE-M3's lexical weights) as postings: token -> (snippet, weight).
        """CREATE TABLE sparse_postings (
            embedder TEXT NOT NULL,
            token INTEGER NOT NULL,
            snippet_id INTEGER NOT NULL REFERENCES snippets(id) ON DELETE CASCADE,
            weight REAL NOT NULL,
            PRIMARY KEY (embedder, token, snippet_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX sparse_postings_snippet ON sparse_postings(snippet_id)",
        """CREATE TRIGGER snippets_sparse_stale AFTER UPDATE OF text ON snippets
           WHEN old.text IS NOT new.text BEGIN
            DELETE FROM sparse_postings WHERE snippet_id = new.id;
        END""",
    ],
    [
        # Each run of a document has a generation: a task of an older run finds it moved on
        # and does nothing. The page batch size is fixed when the document is accepted.
        "ALTER TABLE documents ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE documents ADD COLUMN batch_pages INTEGER",
        # Counts kept by triggers, so "how many snippets lack a vector" never scans snippets.
        "ALTER TABLE embedders ADD COLUMN vector_count INTEGER NOT NULL DEFAULT 0",
        "UPDATE embedders SET vector_count = (SELECT count(*) FROM vectors v WHERE v.embedder = embedders.name)",
        "INSERT INTO counters(name, value) SELECT 'snippets_total', count(*) FROM snippets",
        """CREATE TRIGGER snippets_counted AFTER INSERT ON snippets BEGIN
            UPDATE counters SET value = value + 1 WHERE name = 'snippets_total'; END""",
        """CREATE TRIGGER snippets_uncounted AFTER DELETE ON snippets BEGIN
            UPDATE counters SET value = value - 1 WHERE name = 'snippets_total'; END""",
        """CREATE TRIGGER vectors_counted AFTER INSERT ON vectors BEGIN
            UPDATE embedders SET vector_count = vector_count + 1 WHERE name = new.embedder; END""",
        # Removed vectors are logged, so an index drops their rows instead of reloading everything.
        """CREATE TABLE vector_removals (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            snippet_id INTEGER NOT NULL,
            embedder TEXT NOT NULL
        )""",
        """CREATE TRIGGER vectors_uncounted AFTER DELETE ON vectors BEGIN
            UPDATE embedders SET vector_count = vector_count - 1 WHERE name = old.embedder;
            INSERT INTO vector_removals(snippet_id, embedder) VALUES (old.snippet_id, old.embedder); END""",
    ],
    [
        # Named collections; a document belongs to one or more. Existing documents join "default".
        """CREATE TABLE collections (
            name TEXT PRIMARY KEY,
            description TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE document_collections (
            document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
            added_at REAL NOT NULL,
            PRIMARY KEY (document_id, collection)
        )""",
        "CREATE INDEX document_collections_collection ON document_collections(collection, document_id)",
        "INSERT INTO collections(name, created_at) VALUES ('default', (julianday('now') - 2440587.5) * 86400.0)",
        """INSERT INTO document_collections(document_id, collection, added_at)
           SELECT id, 'default', created_at FROM documents""",
    ],
    [
        # A page batch given up after repeated failures: done, without snippets, and why.
        "ALTER TABLE batches ADD COLUMN note TEXT",
    ],
    [
        # Snippet ids are never reused (SQLite's default is max(id) + 1, which hands a deleted
        # last snippet's id to the next one): new snippets take the next value of this counter,
        # which only grows. A vector saved late by id can then never land on another snippet.
        "INSERT INTO counters(name, value) SELECT 'snippet_id_seq', coalesce(max(id), 0) FROM snippets",
        """CREATE TRIGGER snippets_id_seq AFTER INSERT ON snippets BEGIN
            UPDATE counters SET value = max(value, new.id) WHERE name = 'snippet_id_seq'; END""",
    ],
]
SQLITE_VERSION = len(_SQLITE)

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

# _POSTGRES[i] upgrades a database from schema_version i to i + 1.
_POSTGRES: list[list[str]] = [
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
    [
        # The PDF rendering of a document uploaded in another format (storage/renditions.py);
        # the uploaded file itself stays in pdfs.
        """CREATE TABLE renditions (
            document_id TEXT PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
            data BYTEA NOT NULL
        )""",
    ],
]
POSTGRES_VERSION = len(_POSTGRES)


def create_sqlite(conn) -> None:
    """Every SQLite step on a sqlite3 connection (autocommit), as the old code left a database."""
    for step, statements in enumerate(_SQLITE, 1):
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {step}")


def create_postgres(conn, version: int = POSTGRES_VERSION) -> None:
    """The PostgreSQL steps up to version on a psycopg connection (autocommit), as the old code did."""
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version(version) VALUES (0)")
    for step, statements in enumerate(_POSTGRES[:version], 1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = %s", (step,))


# A database as the old code left it, and what must hold once the current store opened it.

DOC = "0123456789abcdef"
VECTOR = np.arange(DIM, dtype="<f4") / DIM


def fill(execute, blob) -> None:
    """One document with two snippets, one with a vector, as the old code stored them."""
    execute(f"INSERT INTO documents (id, sha256, filename, size, state, title, snippet_count, created_at, updated_at) "
            f"VALUES ('{DOC}', '{DOC}00', 'old.pdf', 10, 'ready', 'Old Manual', 2, 1, 1)")
    execute(f"INSERT INTO document_collections (document_id, collection, added_at) VALUES ('{DOC}', 'default', 1)")
    for i, text in enumerate(["Set LEGACY_SETTING before starting.", "Nothing else matters."]):
        execute(f"INSERT INTO snippets (id, document_id, ordinal, page, text, kind, meta) "
                f"VALUES ({i + 1}, '{DOC}', {i}, 1, '{text}', 'text', '{{\"heading\": \"Legacy\"}}')")
    execute(f"INSERT INTO embedders (name, dim) VALUES ('old-model', {DIM})")
    execute("INSERT INTO vectors (snippet_id, document_id, embedder, dim, {}) VALUES (1, '{}', 'old-model', {}, {})"
            .format(*blob))


def kept(st) -> None:
    assert [d.id for d in st.list_documents()] == [DOC] and st.collections_of([DOC]) == {DOC: ["default"]}
    assert [s.text for s in st.snippets(DOC)] == ["Set LEGACY_SETTING before starting.", "Nothing else matters."]
    ids, _docs, matrix, _ = st.load_vectors("old-model")
    assert ids.tolist() == [1] and np.array_equal(matrix[0], VECTOR)
    assert st.lexical_search("LEGACY_SETTING", 3)[0][0] == 1
    assert st.lexical_search("old manual", 3)  # the context (heading, title) is indexed
    assert st.lexical_search("matter", 3)[0][0] == 2  # indexed again by word stems: "matter" finds "matters"
    index = st.vector_index("old-model")
    index.refresh()
    assert index.search(VECTOR, 1)[0][0] == 1
    # New rows go on after the old ones: a new snippet gets a new id, and its vector is found.
    doc, _ = st.add_document(b"%PDF-1.4\n% new\n%%EOF\n", "new.pdf")
    st.begin_batches(doc.id, 1)
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=2, model="old-model"))
    assert min(s.id for s in st.snippets(doc.id)) > 2 and st.embedder_counts() == {"old-model": 3}
    assert st.unindexed_count("old-model") == 1
