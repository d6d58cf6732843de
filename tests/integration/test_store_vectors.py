"""Dense search on both backends: VectorIndex (numpy) over any store, Store.vector_index, re-embedding."""
from __future__ import annotations

import numpy as np
import pytest

from docenrich.records import Snippet
from docenrich.storage import DimensionMismatch, Store
from docenrich.vectorindex import VectorIndex
from tests.storeutil import DIM, fill, make_batch, pdf_bytes, unit


@pytest.fixture
def st(any_store) -> Store:
    return any_store


def _brute(st: Store, model: str, q: np.ndarray, k: int, doc_id: str | None = None):
    ids, docs, mat, _ = st.load_vectors(model)
    if doc_id is not None:
        keep = docs == doc_id
        ids, mat = ids[keep], mat[keep]
    scores = mat @ q
    order = np.argsort(-scores)[:k]
    return ids[order], scores[order]


def test_vector_index_matches_bruteforce(st: Store):
    doc_ids = fill(st, n_docs=3, per_doc=400, seed=7)
    idx = VectorIndex(st, "test-model")
    idx.refresh()
    assert len(idx) == 1200 and idx.dim == DIM
    rng = np.random.default_rng(123)
    for _ in range(10):
        q = unit(rng)
        for k in (1, 10, 50):
            got = idx.search(q, k)
            want_ids, want_scores = _brute(st, "test-model", q, k)
            assert [g[0] for g in got] == want_ids.tolist()
            np.testing.assert_allclose([g[1] for g in got], want_scores, rtol=1e-5, atol=1e-6)
        for doc_id in doc_ids:
            got = idx.search(q, 7, document_id=doc_id)
            want_ids, _ = _brute(st, "test-model", q, 7, doc_id)
            assert [g[0] for g in got] == want_ids.tolist()
            assert {st.get_snippet(g[0]).document_id for g in got} == {doc_id}
    assert len(idx.search(unit(rng), 5000)) == 1200  # k larger than n
    assert idx.search(unit(rng), 5, document_id="0123456789abcdef") == []
    assert idx.search(unit(rng), 0) == []
    with pytest.raises(ValueError, match="dimensions"):
        idx.search(np.ones(DIM + 1), 3)


def test_incremental_refresh_appends(st: Store, monkeypatch: pytest.MonkeyPatch):
    fill(st, n_docs=1, per_doc=100, seed=1)
    idx = VectorIndex(st, "test-model")
    idx.refresh()
    assert len(idx) == 100

    def no_reload():
        raise AssertionError("inserts only: refresh must append, not reload")

    monkeypatch.setattr(idx, "_reload", no_reload)
    idx.refresh()  # nothing changed: no-op
    calls = {"n": 0}

    class Counting:  # the index's reads of new rows (the store's own writers read them too)
        def __getattr__(self, name):
            return getattr(st, name)

        def _vector_changes(self, *a, **k):
            calls["n"] += 1
            return st._vector_changes(*a, **k)

    monkeypatch.setattr(idx, "store", Counting())
    idx.refresh()
    assert calls["n"] == 0  # unchanged version: not even a query
    new_docs = fill(st, n_docs=2, per_doc=1100, seed=2)  # forces buffer growth
    for _ in range(2):
        idx.refresh()
    assert len(idx) == 2300 and calls["n"] == 1
    newest = st.snippets(new_docs[1])[-1]
    vec = next(r["embedding"] for r in st.export_rows(new_docs[1]) if r["snippet_id"] == newest.id)
    assert idx.search(np.array(vec, dtype=np.float32), 1, document_id=new_docs[1])[0][0] == newest.id
    q = unit(np.random.default_rng(5))
    want_ids, _ = _brute(st, "test-model", q, 20)
    assert [h[0] for h in idx.search(q, 20)] == want_ids.tolist()

    monkeypatch.undo()
    st.delete_document(new_docs[0])
    idx.refresh()  # a removal: full reload
    assert len(idx) == 1200


def test_rows_stored_after_a_load_or_a_removal_are_appended_without_a_copy(st: Store):
    # A search refreshes the index first: copying every row into a larger buffer would stall it.
    docs = fill(st, n_docs=2, per_doc=400, seed=3)
    idx = VectorIndex(st, "test-model")
    idx.refresh()
    loaded = idx._matrix
    fill(st, n_docs=1, per_doc=100, seed=4)  # within a quarter of 800
    idx.refresh()
    assert len(idx) == 900 and idx._matrix is loaded
    st.delete_document(docs[0])
    idx.refresh()
    assert len(idx) == 500
    after_removal = idx._matrix
    fill(st, n_docs=1, per_doc=100, seed=5)
    idx.refresh()
    assert len(idx) == 600 and idx._matrix is after_removal
    q = unit(np.random.default_rng(9))
    want_ids, _ = _brute(st, "test-model", q, 20)
    assert [h[0] for h in idx.search(q, 20)] == want_ids.tolist()


def test_embedder_isolation_and_dimension_check(st: Store):
    doc, _ = st.add_document(pdf_bytes("iso"), "iso.pdf")
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=4, model="small", dim=8))
    st.save_batch(doc.id, 1, make_batch(doc.id, 1, n=6, model="large", dim=32))
    small, large = VectorIndex(st, "small"), VectorIndex(st, "large")
    small.refresh()
    large.refresh()
    assert (len(small), small.dim, len(large), large.dim) == (4, 8, 6, 32)
    small_ids = {s.id for s in st.snippets(doc.id) if s.ordinal < 100}
    assert {h[0] for h in small.search(np.ones(8), 10)} == small_ids
    assert not ({h[0] for h in large.search(np.ones(32), 10)} & small_ids)
    with pytest.raises(ValueError):
        small.search(np.ones(32), 3)
    with pytest.raises(DimensionMismatch, match="8-dimensional"):
        st.save_batch(doc.id, 2, make_batch(doc.id, 2, n=2, model="small", dim=16))
    assert st.done_batches(doc.id) == {0, 1}  # the failed batch left nothing
    assert st.embedder_counts() == {"large": 6, "small": 4}
    assert st.embedder_dims() == {"large": 32, "small": 8}
    assert VectorIndex(st, "nobody").search(np.ones(8), 3) == []


def test_reembedding_flow(st: Store):
    doc, _ = st.add_document(pdf_bytes("reembed"), "r.pdf")
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=5))
    st.save_batch(doc.id, 1, make_batch(doc.id, 1, n=3, model=None))
    todo = st.snippets_needing_vectors("test-model", 100)
    assert sorted(s.ordinal for s in todo) == [100, 101, 102]
    assert all(isinstance(s, Snippet) and s.text and s.document_id == doc.id for s in todo)
    todo_new = st.snippets_needing_vectors("new-model", 3)
    assert len(todo_new) == 3
    rest = st.snippets_needing_vectors("new-model", 100, after_id=todo_new[-1].meta["snippet_id"])
    assert len(rest) == 5
    idx = VectorIndex(st, "new-model")
    idx.refresh()
    assert len(idx) == 0
    version = st.vectors_state()[0]
    rng = np.random.default_rng(0)
    items = [(s.meta["snippet_id"], unit(rng, 24)) for s in todo_new + rest]
    st.save_vectors(items + [(999_999, unit(rng, 24))], "new-model")  # 999_999: no such snippet, skipped
    assert st.vectors_state()[0] > version
    assert st.snippets_needing_vectors("new-model", 100) == []
    assert st.embedder_counts() == {"new-model": 8, "test-model": 5}
    idx.refresh()
    assert len(idx) == 8
    with pytest.raises(DimensionMismatch):
        st.save_vectors([(todo[0].meta["snippet_id"], unit(rng, 12))], "new-model")
    assert st.delete_vectors("new-model") == 8
    idx.refresh()
    assert len(idx) == 0
