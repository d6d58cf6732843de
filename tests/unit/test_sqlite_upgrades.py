"""A SQLite database made by the schema code from before Alembic upgrades in place: its documents,
snippets, vectors and lexical index stay; one of another old version is refused, saying why."""
from __future__ import annotations

import sqlite3

import pytest

from docenrich.storage import DB_NAME, SQLiteStore, StorageError, schema_head
from tests.helpers import legacy_schema


def test_a_sqlite_database_from_before_alembic_upgrades_in_place(tmp_path):
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    legacy_schema.create_sqlite(conn)
    legacy_schema.fill(conn.execute, ("vector", legacy_schema.DOC, legacy_schema.DIM, f"x'{legacy_schema.VECTOR.tobytes().hex()}'"))
    conn.close()
    st = SQLiteStore(tmp_path)
    try:
        legacy_schema.kept(st)
        check = sqlite3.connect(tmp_path / DB_NAME)
        assert check.execute("SELECT version_num FROM alembic_version").fetchone()[0] == schema_head()
        assert check.execute("PRAGMA user_version").fetchone()[0] > legacy_schema.SQLITE_VERSION  # old code refuses it
    finally:
        st.close()
    SQLiteStore(tmp_path).close()  # opening it again changes nothing


@pytest.mark.parametrize("version, word", [(5, "older"), (legacy_schema.SQLITE_VERSION + 2, "newer")])
def test_a_sqlite_database_of_another_legacy_version_is_refused(tmp_path, version, word):
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    legacy_schema.create_sqlite(conn)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    with pytest.raises(StorageError, match=word):
        SQLiteStore(tmp_path)
