"""The memory-mapped vector files: append, masking, compaction, rebuilds, crash leftovers, filters inside the search."""
from __future__ import annotations

import json

import numpy as np
import pytest

from docenrich.filters import SearchFilter
from docenrich.storage import SQLiteStore
from docenrich.vectorindex.files import VectorFiles, vector_dir
from docenrich.vectorindex.mapped import EF_SEARCH, MappedIndex, build_graph, compact, sync
from tests.storeutil import DIM, fill, unit

MODEL = "test-model"


def _store(tmp_path, mode: str = "exact") -> SQLiteStore:
    return SQLiteStore(tmp_path / "data", vector_mode=mode, hnsw_min_rows=0)


def _brute(st: SQLiteStore, q: np.ndarray, k: int, docs: set[str] | None = None) -> list[int]:
    ids, doc_ids, mat, _ = st.load_vectors(MODEL)
    if docs is not None:
        keep = np.isin(doc_ids, list(docs))
        ids, mat = ids[keep], mat[keep]
    return ids[np.argsort(-(mat @ q), kind="stable")[:k]].tolist()


def _files(st: SQLiteStore) -> VectorFiles:
    return VectorFiles(vector_dir(st.data_dir, MODEL), MODEL)


def test_writers_append_and_readers_map_the_same_rows(tmp_path):
    """Saving batches appends to the files; an index maps them and agrees with brute force."""
    st = _store(tmp_path)
    fill(st, 2, 120, seed=1)
    m = _files(st).manifest()
    assert m is not None and m.rows == 240 and m.state == st.vectors_state()
    idx = st.vector_index(MODEL)
    idx.refresh()
    assert len(idx) == 240 and isinstance(idx._view.vec, np.memmap)
    q = unit(np.random.default_rng(3))
    assert [sid for sid, _ in idx.search(q, 10)] == _brute(st, q, 10)


def test_deleted_document_never_appears_and_is_compacted_away(tmp_path):
    """A deleted document's rows are masked at once, and compaction drops them from the files."""
    st = _store(tmp_path)
    docs = fill(st, 4, 400, seed=2)
    idx = st.vector_index(MODEL)
    idx.refresh()
    gone = {s.id for s in st.snippets(docs[0])}
    st.delete_document(docs[0])
    idx.refresh()
    q = unit(np.random.default_rng(4))
    got = [sid for sid, _ in idx.search(q, 1600)]
    assert len(got) == 1200 and not gone & set(got)
    assert idx.search(q, 5, document_id=docs[0]) == []
    files = _files(st)
    st.delete_document(docs[1])  # half masked: past the compaction threshold
    sync(st, files, background=False)
    m = files.manifest()
    assert m.deleted == 0 and m.rows == 800
    idx.refresh()
    assert set(sid for sid, _ in idx.search(q, 2000)).isdisjoint(gone) and len(idx) == 800
    assert compact(files) is None  # nothing masked: nothing to do


def test_crash_leftovers_past_the_valid_rows_are_ignored_then_cut(tmp_path):
    """Bytes a killed writer left past the manifest's rows are never read, and the next append replaces them."""
    st = _store(tmp_path)
    fill(st, 1, 100, seed=5)
    files = _files(st)
    m = files.manifest()
    for name in ("vec", "ids", "doc", "page", "kind"):
        with open(files.column(m.base, name), "ab") as fh:
            fh.write(b"\xff" * 1000)
    idx = st.vector_index(MODEL)
    idx.refresh()
    assert len(idx) == 100
    fill(st, 1, 50, seed=6)
    idx.refresh()
    q = unit(np.random.default_rng(7))
    assert [sid for sid, _ in idx.search(q, 150)] == _brute(st, q, 150)
    assert files.column(files.manifest().base, "ids").stat().st_size == 150 * 8


@pytest.mark.parametrize("damage", ["missing", "truncated", "manifest", "other-dimension"])
def test_files_are_rebuilt_from_the_database(tmp_path, damage):
    """Missing, short or unreadable files (or another dimension) are rebuilt from the vectors table."""
    st = _store(tmp_path)
    fill(st, 1, 100, seed=8)
    files = _files(st)
    m = files.manifest()
    if damage == "missing":
        files.column(m.base, "vec").unlink()
    elif damage == "truncated":
        with open(files.column(m.base, "ids"), "r+b") as fh:
            fh.truncate(10)
    elif damage == "manifest":
        files.path("manifest.json").write_text("{not json")
    else:
        files.path("manifest.json").write_text(json.dumps({**json.loads(files.path("manifest.json").read_text()),
                                                          "dim": DIM + 1, "state": [0, 0]}))
    idx = st.vector_index(MODEL)
    idx.refresh()
    assert len(idx) == 100 and idx.dim == DIM
    q = unit(np.random.default_rng(9))
    assert [sid for sid, _ in idx.search(q, 20)] == _brute(st, q, 20)


@pytest.mark.parametrize("mode", ["exact", "hnsw"])
def test_a_filter_keeping_one_percent_returns_its_true_top_k(tmp_path, mode):
    """A filter that keeps 1% of the rows is applied inside the search: the filtered set's exact top k."""
    st = _store(tmp_path, mode)
    docs = fill(st, 100, 50, seed=10)
    files = _files(st)
    if mode == "hnsw":
        assert build_graph(files, 0) is not None
    idx = st.vector_index(MODEL)
    idx.refresh()
    assert (idx._view.graph is not None) == (mode == "hnsw")
    rng = np.random.default_rng(11)
    for _ in range(5):
        q = unit(rng)
        assert [sid for sid, _ in idx.search(q, 10, document_ids=[docs[42]])] == _brute(st, q, 10, {docs[42]})
        f = SearchFilter(document_ids=(docs[7],), page_from=1)
        assert [sid for sid, _ in idx.search(q, 10, filter=f)] == _brute(st, q, 10, {docs[7]})


def test_hnsw_graph_then_appended_rows_are_searched_exactly(tmp_path):
    """Rows appended after the graph was built are found by the exact tail scan; masked graph rows are skipped."""
    st = _store(tmp_path, "hnsw")
    docs = fill(st, 4, 200, seed=12)
    files = _files(st)
    build_graph(files, 0)
    newest = fill(st, 1, 30, seed=13)[0]
    st.delete_document(docs[0])
    idx = st.vector_index(MODEL)
    idx.refresh()
    assert idx._view.graph_rows == 800 and idx._view.n == 830
    # A graph restored from its file searches as wide as configured, not at usearch's default.
    assert idx._view.graph.expansion_search == EF_SEARCH > 64
    gone = {s.id for s in st.snippets(docs[0])} if st.get_document(docs[0]) else set()
    q = unit(np.random.default_rng(14))
    got = [sid for sid, _ in idx.search(q, 50)]
    assert not set(got) & gone
    for s in st.snippets(newest)[:3]:
        vec = next(r["embedding"] for r in st.export_rows(newest) if r["snippet_id"] == s.id)
        assert idx.search(np.asarray(vec, dtype=np.float32), 1)[0][0] == s.id
    want = set(_brute(st, q, 10))
    assert len(want & {sid for sid, _ in idx.search(q, 10)}) >= 9  # approximate, but close at this size


def test_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="VECTOR_INDEX"):
        SQLiteStore(tmp_path / "data", vector_mode="annoy", hnsw_min_rows=0)
    assert isinstance(MappedIndex(_store(tmp_path), MODEL, tmp_path / "data"), MappedIndex)


def test_an_append_larger_than_one_write_lands_whole(tmp_path, monkeypatch):
    """write(2) moves at most about 2 GiB at once; short writes are carried on, not dropped."""
    import os

    from docenrich.vectorindex import files

    real = os.pwrite
    monkeypatch.setattr(files.os, "pwrite", lambda fd, data, at: real(fd, bytes(data[:1000]), at))
    path = tmp_path / "1.vec"
    payload = np.arange(5000, dtype=np.float32).tobytes()  # 20,000 bytes: twenty short writes
    files.append_bytes(path, 0, b"x" * 10)
    files.append_bytes(path, 4, payload)
    assert path.read_bytes() == b"xxxx" + payload
