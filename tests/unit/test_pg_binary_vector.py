"""Vectors go to PostgreSQL in pgvector's binary form, cast in the SQL (no text formatting, no type lookup)."""
from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

pytest.importorskip("psycopg")

from docenrich.storage.postgres.binvec import BinaryVector  # noqa: E402
from docenrich.storage.tables import vectors  # noqa: E402


def test_bytes_are_what_pgvector_reads():
    from pgvector import Vector

    vec = np.random.default_rng(1).standard_normal(1024).astype(np.float32)
    assert BinaryVector(vec).data == Vector(vec).to_binary()


def test_an_insert_binds_binary_vectors_behind_a_cast():
    vec = np.linspace(-1, 1, 8, dtype=np.float32)
    stmt = sa.insert(vectors).values(snippet_id=1, document_id="d", embedder="m", dim=8, embedding=vec)
    compiled = stmt.compile(dialect=postgresql.psycopg.dialect())
    assert "CAST(%(embedding)s AS VECTOR)" in str(compiled)
    bound = vectors.c.embedding.type.bind_processor(postgresql.psycopg.dialect())(vec)
    assert isinstance(bound, BinaryVector)
    assert np.array_equal(np.frombuffer(bound.data[4:], dtype=">f4"), vec)
