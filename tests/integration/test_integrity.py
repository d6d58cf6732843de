"""What is stored stays whole: ids are never reused, a late vector is checked against the text it was
made from, and deleting a collection is one transaction; on SQLite and PostgreSQL."""
from __future__ import annotations

import numpy as np
import pytest

from docenrich.records import Snippet
from docenrich.storage.rows import text_digest


def _doc(st, tag: str, texts: list[str], collection: str | None = None) -> str:
    doc, _ = st.add_document(f"%PDF-1.4\n% {tag}\n%%EOF\n".encode(), f"{tag}.pdf",
                             collections=[collection] if collection else None)
    st.begin_batches(doc.id, 1)
    st.save_batch(doc.id, 0, [Snippet(text=t, page=1, bbox=(0, 0, 1, 1), document_id=doc.id, ordinal=i)
                              for i, t in enumerate(texts)])
    return doc.id


def test_snippet_ids_are_never_reused(any_store):
    st = any_store
    first = _doc(st, "first", ["one", "two"])
    last = _doc(st, "last", ["three"])
    highest = max(s.id for s in st.snippets(last))
    st.delete_document(last)  # the snippet with the highest id goes
    again = _doc(st, "again", ["four"])
    assert min(s.id for s in st.snippets(again)) > highest
    assert [s.text for s in st.snippets(first)] == ["one", "two"]


def test_a_vector_made_from_old_text_is_not_saved(any_store):
    st = any_store
    doc = _doc(st, "changing", ["the old text", "stays the same"])
    old, same = st.snippets(doc)
    digests = {old.id: text_digest(old.text), same.id: text_digest(same.text)}
    # The document is extracted again while a re-embedding of its old text is under way.
    st.save_batch(doc, 0, [Snippet(text="the new text", page=1, bbox=(0, 0, 1, 1), document_id=doc, ordinal=0),
                           Snippet(text="stays the same", page=1, bbox=(0, 0, 1, 1), document_id=doc, ordinal=1)])
    vec = np.ones(4, np.float32) / 2
    st.save_vectors([(old.id, vec), (same.id, vec)], "late", digests)
    st.save_sparse([(old.id, {3: 1.0}), (same.id, {3: 1.0})], "late", digests)
    assert st.embedder_counts() == {"late": 1}
    assert [sid for sid, _ in st.sparse_search("late", {3: 1.0}, 5)] == [same.id]
    index = st.vector_index("late")
    index.refresh()
    assert [sid for sid, _ in index.search(vec, 5)] == [same.id]


def test_deleting_a_collection_is_one_transaction(any_store, monkeypatch):
    st = any_store
    a = _doc(st, "a", ["alpha"], "doomed")
    b = _doc(st, "b", ["beta"], "doomed")
    real, calls = st._clear_content, []

    def fail_second(conn, doc_id, *args, **kwargs):
        calls.append(doc_id)
        if len(calls) == 2:
            raise RuntimeError("power lost")
        return real(conn, doc_id, *args, **kwargs)

    monkeypatch.setattr(st, "_clear_content", fail_second)
    with pytest.raises(RuntimeError):
        st.delete_collection("doomed")
    monkeypatch.undo()
    # Nothing happened: the collection and both documents with their snippets are still there.
    assert st.get_collection("doomed").documents == 2
    assert [s.text for s in st.snippets(a)] == ["alpha"] and [s.text for s in st.snippets(b)] == ["beta"]
    assert sorted(st.delete_collection("doomed")) == sorted([a, b])
    assert st.get_document(a) is None and st.get_document(b) is None and st.get_collection("doomed") is None
