"""The in-memory vector index restricted to a set of documents: exact, whether the set is small
(rows gathered) or large (all rows scored, then picked)."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("chosen", [1, 3, 40, 99])
def test_index_restricted_to_a_set_of_documents_is_exact(chosen):
    """Small and large document sets (gathered rows, or all rows scored then picked) agree with brute force."""
    import numpy as np

    from docenrich.vectorindex import VectorIndex

    rng = np.random.default_rng(chosen)
    matrix = rng.standard_normal((1000, 16)).astype(np.float32)
    docs = np.array([f"{i % 100:016x}" for i in range(1000)], dtype="U16")
    ids = np.arange(1000, dtype=np.int64) + 5

    class Source:
        def vectors_state(self):
            return (1, 1)

        def _vector_changes(self, embedder, after_rowid, after_seq):
            fresh = after_rowid == 0
            return {"removed": [] if after_seq is not None else None, "last_seq": 0,
                    "ids": ids if fresh else ids[:0], "docs": docs if fresh else docs[:0],
                    "matrix": matrix if fresh else matrix[:0], "max_rowid": 1000, "state": (1, 1)}

    index = VectorIndex(Source(), "e")
    index.refresh()
    query = rng.standard_normal(16).astype(np.float32)
    within = {f"{i:016x}" for i in range(chosen)} | {"ffffffffffffffff"}  # an unknown id is ignored
    expected_rows = [i for i in np.argsort(-(matrix @ query), kind="stable") if docs[i] in within][:7]
    assert [sid for sid, _ in index.search(query, 7, document_ids=within)] == [int(ids[i]) for i in expected_rows]
    assert index.search(query, 7, document_ids=set()) == []
    assert index.search(query, 7, document_id="0000000000000001", document_ids={"0000000000000002"}) == []
