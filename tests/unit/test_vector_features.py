"""What a pgvector version can do, read from its extversion string."""
from __future__ import annotations

import pytest

from docenrich.storage.postgres.index import (
    HALFVEC_MAX_DIM,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    HNSW_MAX_DIM,
    VectorFeatures,
    hnsw_index_sql,
)


@pytest.mark.parametrize("text, halfvec, iterative, max_dim", [
    ("0.5.1", False, False, HNSW_MAX_DIM),
    ("0.6.2", False, False, HNSW_MAX_DIM),
    ("0.7.0", True, False, HALFVEC_MAX_DIM),
    ("0.8.5", True, True, HALFVEC_MAX_DIM),
    ("1.0.0-beta", True, True, HALFVEC_MAX_DIM),
    (None, False, False, HNSW_MAX_DIM),
])
def test_features_follow_the_extension_version(text, halfvec, iterative, max_dim):
    features = VectorFeatures.parse(text)
    assert (features.halfvec, features.iterative, features.max_dim) == (halfvec, iterative, max_dim)


def test_the_index_is_over_halfvec_only_when_asked():
    assert "(embedding::halfvec(1024)) halfvec_cosine_ops) WITH (" in hnsw_index_sql(1024)
    assert "(embedding::vector(384)) vector_cosine_ops) WITH (" in hnsw_index_sql(384, half=False)
    assert hnsw_index_sql(384).endswith("WHERE dim = 384")


def test_the_graph_is_built_wider_than_pgvectors_default():
    sql = hnsw_index_sql(1024)
    assert f"m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})" in sql and HNSW_EF_CONSTRUCTION > 64
    assert "ef_construction = 64)" in hnsw_index_sql(1024, ef_construction=64)
