"""Pages given up are recorded with the batch, on both backends: the document ends ready naming
them, or failed when every batch was given up; a batch already stored is never overwritten."""
from __future__ import annotations

from docenrich.pdf import inspect_pdf
from docenrich.records import Snippet
from tests.helpers.pdfs import text_pdf


def test_given_up_batches_name_their_pages_and_all_given_up_fails(any_store):
    data = text_pdf(3, seed=11)
    doc, _ = any_store.add_document(data, "notes.pdf", inspect_pdf(data), batch_pages=1)
    any_store.begin_batches(doc.id, 3)
    any_store.save_batch(doc.id, 0, [Snippet(text="kept", page=1, bbox=None, document_id=doc.id, ordinal=0)],
                         doc.generation)
    assert any_store.fail_batch(doc.id, 0, doc.generation, "page 1 could not be processed").batches_done == 1
    any_store.fail_batch(doc.id, 2, doc.generation, "page 3 could not be processed: x 3 times")
    assert any_store.fail_batch(doc.id, 1, doc.generation + 1, "another run") is None
    done = any_store.fail_batch(doc.id, 1, doc.generation, "page 2 could not be processed: x 3 times")
    assert done.state == "ready" and done.snippet_count == 1
    assert done.notes == ["page 2 could not be processed: x 3 times", "page 3 could not be processed: x 3 times"]

    other = text_pdf(2, seed=12)
    lost, _ = any_store.add_document(other, "lost.pdf", inspect_pdf(other), batch_pages=2)
    any_store.begin_batches(lost.id, 1)
    failed = any_store.fail_batch(lost.id, 0, lost.generation, "pages 1–2 could not be processed: x 3 times")
    assert failed.state == "failed"
    assert failed.error == "no page could be processed: pages 1–2 could not be processed: x 3 times"
