"""SQLite databases from before a migration, opened by the current store: documents land in the
`default` collection, and old snippets get their lexical index."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from docenrich.storage import DB_NAME, SCHEMA_VERSION, SQLiteStore
from docenrich.storage.sqlite import schema


def top_text(st, query: str, **kw) -> str | None:
    hits = st.lexical_search(query, 3, **kw)
    return st.get_snippet(hits[0][0]).text if hits else None


def test_existing_databases_put_their_documents_in_default(tmp_path):
    """A database from before collections is migrated: every document lands in `default`."""
    data = tmp_path / "old"
    data.mkdir()
    conn = sqlite3.connect(data / schema.DB_NAME)
    for statement in schema._MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO documents (id, sha256, filename, size, created_at, updated_at) "
                 "VALUES ('0123456789abcdef', '0123456789abcdef00', 'old.pdf', 10, 1, 1)")
    conn.commit()
    conn.close()
    store = SQLiteStore(data)
    try:
        assert store.collections_of(["0123456789abcdef"]) == {"0123456789abcdef": ["default"]}
    finally:
        store.close()


def test_old_database_gets_its_index_on_upgrade(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / DB_NAME)
    for statement in schema._MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO documents (id, sha256, filename, size, title, created_at, updated_at) "
                 "VALUES ('d1', 'x', 'old.pdf', 1, 'Old Manual', 0, 0)")
    conn.execute("INSERT INTO snippets (document_id, ordinal, page, text, kind, meta) VALUES "
                 "('d1', 0, 1, 'Set LEGACY_SETTING before starting.', 'text', '{\"heading\": \"Legacy\"}')")
    conn.commit()
    conn.close()
    st = SQLiteStore(data)
    try:
        assert sqlite3.connect(data / DB_NAME).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert top_text(st, "LEGACY_SETTING") == "Set LEGACY_SETTING before starting."
        # The context (heading, title) of old snippets is indexed too.
        assert len(st.lexical_search("old manual", 5)) == 1
    finally:
        st.close()
