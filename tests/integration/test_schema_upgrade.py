"""A PostgreSQL database made by the schema code from before Alembic upgrades in place: its
documents, snippets, vectors and lexical index stay."""
from __future__ import annotations

import pytest

from docenrich.storage import schema_head
from tests.helpers import legacy_schema
from tests.storeutil import run_sql


@pytest.mark.parametrize("version", [2, legacy_schema.POSTGRES_VERSION])  # before and after renditions
def test_a_postgres_database_from_before_alembic_upgrades_in_place(pg_server, empty_pg_url, version):
    import psycopg

    from docenrich.storage.postgres import PostgresStore
    from docenrich.storage.postgres.store import lex_vector

    with psycopg.connect(empty_pg_url, autocommit=True) as conn:
        legacy_schema.create_postgres(conn, version)
        literal = "'[" + ",".join(str(float(x)) for x in legacy_schema.VECTOR) + "]'"
        legacy_schema.fill(conn.execute, ("embedding", legacy_schema.DOC, legacy_schema.DIM, literal))
        conn.execute("SELECT setval('snippets_id_seq', 2)")  # as if numbered by the sequence
        # The old store wrote each snippet's tsvector itself, with the same lex_vector.
        for sid, text in conn.execute("SELECT id, text FROM snippets").fetchall():
            conn.execute("UPDATE snippets SET lex = %s::tsvector WHERE id = %s",
                         (lex_vector(text, "Legacy", "Old Manual"), sid))
    st = PostgresStore(empty_pg_url)
    try:
        legacy_schema.kept(st)
        assert run_sql(st, "SELECT version_num FROM alembic_version")[0]["version_num"] == schema_head()
    finally:
        st.close()
