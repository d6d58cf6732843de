"""Search filters inside every retriever of both backends: a small collection is found however many
other snippets say the same word, and kinds, pages, file names and upload dates narrow every list."""
from __future__ import annotations

import time

import numpy as np
import pytest

from docenrich.filters import SearchFilter, build_filter
from docenrich.records import Snippet
from docenrich.search import search_filter

DIM = 8


def _vec(i: int, lean: float) -> np.ndarray:
    """Vectors all near the query axis; `lean` pulls one further from it."""
    v = np.zeros(DIM, np.float32)
    v[0], v[1 + i % (DIM - 1)] = 1.0, lean
    return v / np.linalg.norm(v)


def _store_doc(st, name: str, collection: str, pages: int, lean: float, kinds=("text",), weak: bool = False) -> str:
    doc, _ = st.add_document(f"%PDF-1.4\n% {name}\n%%EOF\n".encode(), f"{name}.pdf", collections=[collection])
    st.begin_batches(doc.id, 1)
    snippets = [
        Snippet(text=f"The quokka of page {p} in {name}" + (" among many other words here" * 5 if weak else ""), page=p, bbox=(0, 0, 1, 1), document_id=doc.id,
                ordinal=p * 10 + j, kind=kind, embedding=_vec(p, lean), embedding_model="m",
                sparse={42: 0.5 if weak else 1.0, 7: 0.1 * (j + 1)})
        for p in range(1, pages + 1) for j, kind in enumerate(kinds)
    ]
    st.save_batch(doc.id, 0, snippets)
    return doc.id


@pytest.fixture()
def quokka(any_store):
    """A 300-page document in `big` saying quokka on every page, a 2-page one in `small` saying it less."""
    st = any_store
    big = _store_doc(st, "big-manual", "big", 300, lean=0.1)
    small = _store_doc(st, "small-note", "small", 2, lean=2.0, kinds=("text", "table"), weak=True)
    return st, big, small


def _dense(st, f: SearchFilter, k: int = 5) -> list[int]:
    index = st.vector_index("m")
    index.refresh()
    return [sid for sid, _ in index.search(_vec(0, 0.0), k, filter=f)]


def _lists(st, f: SearchFilter, k: int = 5) -> dict[str, list[int]]:
    return {
        "lexical": [sid for sid, _ in st.lexical_search("quokka", k, filter=f)],
        "sparse": [sid for sid, _ in st.sparse_search("m", {42: 1.0}, k, filter=f)],
        "dense": _dense(st, f, k),
    }


def _owners(st, ids: list[int]) -> set[str]:
    return {s.document_id for s in st.get_snippets(ids)}


def test_a_small_collection_is_found_by_every_retriever(quokka):
    st, big, small = quokka
    unfiltered = _lists(st, search_filter(None))
    for name, ids in unfiltered.items():
        assert _owners(st, ids) == {big}, f"{name}: the big document should outrank the small one"
    scoped = _lists(st, search_filter(None, collections=["small"]))
    for name, ids in scoped.items():
        assert len(ids) == 4 and _owners(st, ids) == {small}, name
    assert all(ids == [] for ids in _lists(st, search_filter(None, collections=["nowhere"])).values())
    both = _lists(st, search_filter(None, collections=["small", "big"]), k=1000)
    assert all(len(ids) == 304 for ids in both.values())


def test_kinds_pages_and_documents_narrow_every_list(quokka):
    st, big, small = quokka
    tables = _lists(st, build_filter(kinds=["table"]))
    assert all(len(ids) == 2 and {s.kind for s in st.get_snippets(ids)} == {"table"} for ids in tables.values())
    no_tables = _lists(st, build_filter(exclude_kinds=["table"], collections=["small"]))
    assert all({s.kind for s in st.get_snippets(ids)} == {"text"} for ids in no_tables.values())
    pages = _lists(st, build_filter(pages="150-152"), k=50)
    for name, ids in pages.items():
        assert sorted(s.page for s in st.get_snippets(ids)) == [150, 151, 152], name
    one_doc = _lists(st, SearchFilter(document_ids=(small,)).within_document(small))
    assert all(_owners(st, ids) == {small} for ids in one_doc.values())
    assert all(ids == [] for ids in _lists(st, SearchFilter().within_document(small).within_document(big)).values())


def test_file_names_and_upload_dates_narrow_every_list(quokka):
    st, big, small = quokka
    named = _lists(st, build_filter(filename="SMALL-*.pdf"))
    assert all(ids and _owners(st, ids) == {small} for ids in named.values())
    assert all(ids == [] for ids in _lists(st, build_filter(filename="small?note")).values())  # no .pdf
    later = time.time() + 3600
    future = build_filter(uploaded_after=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(later)))
    assert all(ids == [] for ids in _lists(st, future).values())
    today = build_filter(uploaded_before=time.strftime("%Y-%m-%d", time.gmtime()))  # a date: up to its end
    assert all(len(ids) == 5 for ids in _lists(st, today).values())


def test_a_deleted_document_leaves_the_filtered_index(quokka):
    st, big, small = quokka
    f = search_filter(None, collections=["small", "big"])
    assert small in _owners(st, _dense(st, f, k=1000))
    st.delete_document(small)
    assert _owners(st, _dense(st, f, k=1000)) == {big}
    assert _dense(st, search_filter(None, collections=["small"])) == []
