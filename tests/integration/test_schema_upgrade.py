"""A database made by the schema code from before Alembic upgrades in place on both backends: its
documents, snippets, vectors and lexical index stay, and a newer or older one is refused clearly."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from docenrich.storage import DB_NAME, SQLiteStore, StorageError, schema_head
from tests.helpers import legacy_schema
from tests.storeutil import DIM, make_batch

DOC = "0123456789abcdef"
VECTOR = np.arange(DIM, dtype="<f4") / DIM


def _fill(execute, blob) -> None:
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


def _kept(st) -> None:
    assert [d.id for d in st.list_documents()] == [DOC] and st.collections_of([DOC]) == {DOC: ["default"]}
    assert [s.text for s in st.snippets(DOC)] == ["Set LEGACY_SETTING before starting.", "Nothing else matters."]
    ids, _docs, matrix, _ = st.load_vectors("old-model")
    assert ids.tolist() == [1] and np.array_equal(matrix[0], VECTOR)
    assert st.lexical_search("LEGACY_SETTING", 3)[0][0] == 1
    assert st.lexical_search("old manual", 3)  # the context (heading, title) is indexed
    index = st.vector_index("old-model")
    index.refresh()
    assert index.search(VECTOR, 1)[0][0] == 1
    # New rows go on after the old ones: a new snippet gets a new id, and its vector is found.
    doc, _ = st.add_document(b"%PDF-1.4\n% new\n%%EOF\n", "new.pdf")
    st.begin_batches(doc.id, 1)
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=2, model="old-model"))
    assert min(s.id for s in st.snippets(doc.id)) > 2 and st.embedder_counts() == {"old-model": 3}
    assert st.unindexed_count("old-model") == 1


def test_a_sqlite_database_from_before_alembic_upgrades_in_place(tmp_path):
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    legacy_schema.create_sqlite(conn)
    _fill(conn.execute, ("vector", DOC, DIM, f"x'{VECTOR.tobytes().hex()}'"))
    conn.close()
    st = SQLiteStore(tmp_path)
    try:
        _kept(st)
        check = sqlite3.connect(tmp_path / DB_NAME)
        assert check.execute("SELECT version_num FROM alembic_version").fetchone()[0] == schema_head()
        assert check.execute("PRAGMA user_version").fetchone()[0] > legacy_schema.SQLITE_VERSION  # old code refuses it
    finally:
        st.close()
    SQLiteStore(tmp_path).close()  # opening it again changes nothing


def test_a_postgres_database_from_before_alembic_upgrades_in_place(pg_server, empty_pg_url):
    import psycopg

    from docenrich.storage.postgres import PostgresStore
    from docenrich.storage.postgres.store import lex_vector

    with psycopg.connect(empty_pg_url, autocommit=True) as conn:
        legacy_schema.create_postgres(conn)
        literal = "'[" + ",".join(str(float(x)) for x in VECTOR) + "]'"
        _fill(conn.execute, ("embedding", DOC, DIM, literal))
        conn.execute("SELECT setval('snippets_id_seq', 2)")  # as if numbered by the sequence
        # The old store wrote each snippet's tsvector itself, with the same lex_vector.
        for sid, text in conn.execute("SELECT id, text FROM snippets").fetchall():
            conn.execute("UPDATE snippets SET lex = %s::tsvector WHERE id = %s",
                         (lex_vector(text, "Legacy", "Old Manual"), sid))
    st = PostgresStore(empty_pg_url)
    try:
        _kept(st)
        assert st._q("SELECT version_num FROM alembic_version")[0]["version_num"] == schema_head()
    finally:
        st.close()


@pytest.mark.parametrize("version, word", [(5, "older"), (legacy_schema.SQLITE_VERSION + 2, "newer")])
def test_a_sqlite_database_of_another_legacy_version_is_refused(tmp_path, version, word):
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    legacy_schema.create_sqlite(conn)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    with pytest.raises(StorageError, match=word):
        SQLiteStore(tmp_path)
