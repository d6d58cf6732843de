"""The SQLite store's bookkeeping under races and re-runs: state changes are compare-and-set and a
new run has a new generation, the vector index follows removals without a reload, the unindexed
check reads counters, and a document names its embedder once every vector is re-embedded."""
from __future__ import annotations

import sqlalchemy

from tests.helpers.pdfs import text_pdf
from tests.storeutil import doc_with_snippets


def test_state_changes_are_compare_and_set_and_a_new_run_has_a_new_generation(tmp_path):
    from docenrich.storage import SQLiteStore

    store = SQLiteStore(tmp_path)
    data = text_pdf(2, seed=55)
    doc, _ = store.add_document(data, "race.pdf", batch_pages=2)
    assert doc.generation == 0 and doc.batch_pages == 2
    store.update_document(doc.id, state="failed", stage="failed", error="a reason")
    # A task that checked the state before the failure writes late: refused.
    assert store.update_document(doc.id, state="extracting", stage="late").state == "failed"
    assert store.get_document(doc.id).error == "a reason"
    again, created = store.add_document(data, "race.pdf", batch_pages=5)
    assert created and again.state == "queued" and again.generation == 1 and again.batch_pages == 5
    # A task of the old run changes nothing, not even to a legal state.
    assert store.update_document(doc.id, generation=0, state="extracting").state == "queued"
    assert store.save_batch(doc.id, 0, [], generation=0) is None
    assert store.update_document(doc.id, generation=1, state="extracting").state == "extracting"
    store.close()


def test_removing_vectors_updates_the_index_without_reloading_it(tmp_path, monkeypatch):
    import numpy as np

    from docenrich.storage import SQLiteStore
    from docenrich.vectorindex import VectorIndex

    store = SQLiteStore(tmp_path)
    docs = [doc_with_snippets(store, 300, seed=s) for s in range(3)]
    index = VectorIndex(store, "test-model")
    index.refresh()
    assert len(index) == 900

    def no_full_load(*_a, **_k):
        raise AssertionError("a removal must not reload every vector")

    monkeypatch.setattr(index, "_reload", no_full_load)
    store.delete_document(docs[1].id)
    doc_with_snippets(store, 5, seed=9)
    index.refresh()
    assert len(index) == 605
    hits = index.search(np.ones(16, np.float32), 1000)
    remaining = {s.id for d in (docs[0], docs[2]) for s in store.snippets(d.id)}
    assert len(hits) == 605 and remaining <= {sid for sid, _ in hits}
    assert not {sid for sid, _ in hits} - remaining - {s.id for d in store.list_documents() for s in store.snippets(d.id)}
    store.close()


def test_the_unindexed_check_reads_counts_not_snippets(tmp_path):
    from docenrich import search
    from docenrich.storage import SQLiteStore

    first, second = SQLiteStore(tmp_path / "a"), SQLiteStore(tmp_path / "b")
    doc = doc_with_snippets(first, 40, embedder="old-model")
    doc_with_snippets(second, 10, embedder="new-model")
    statements: list[str] = []
    sqlalchemy.event.listen(first.engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql))
    assert search._unindexed(first, "new-model") == "40"
    assert search._unindexed(second, "new-model") == ""  # another store: its own answer, no shared cache
    assert not [s for s in statements if "FROM snippets" in s], statements
    first.save_vectors([(s.id, __import__("numpy").ones(16)) for s in first.snippets(doc.id)[:15]], "new-model")
    assert search._unindexed(first, "new-model") == "25"
    first.close()
    second.close()


def test_a_documents_embedder_names_the_model_after_a_reembed(tmp_path):
    import numpy as np

    from docenrich.storage import SQLiteStore

    store = SQLiteStore(tmp_path)
    doc = doc_with_snippets(store, 6, embedder="old-model")
    assert store.get_document(doc.id).embedder == "old-model"
    snippets = store.snippets(doc.id)
    store.save_vectors([(s.id, np.ones(8)) for s in snippets[:3]], "new-model")
    assert store.get_document(doc.id).embedder == "old-model"  # half done: still the old one
    store.save_vectors([(s.id, np.ones(8)) for s in snippets[3:]], "new-model")
    assert store.get_document(doc.id).embedder == "new-model"
    store.close()
