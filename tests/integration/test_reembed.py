"""Re-embedding and re-chunking stored documents (`flask docenrich reembed`) with the session's worker."""
from __future__ import annotations

import io
import os
import uuid

import pytest

from tests.helpers.pdfs import pdf_with_text
from tests.helpers.web import make_app, upload, wait_ready


@pytest.fixture()
def client(worker):
    return make_app().test_client()


@pytest.mark.slow
def test_reembed_fills_missing_vectors(worker, tmp_path):
    from docenrich.cli import reembed
    from docenrich.records import Snippet
    from docenrich.storage import SQLiteStore as Store

    store = Store(tmp_path / "data")
    doc, _ = store.add_document(pdf_with_text("reembed"), "r.pdf")
    store.begin_batches(doc.id, 1)
    texts = ["Vectors for old snippets.", "A second snippet.", "And a third one."]
    store.save_batch(doc.id, 0, [Snippet(text=t, page=1, document_id=doc.id, ordinal=i) for i, t in enumerate(texts)])
    assert store.embedder_counts() == {}
    bar = io.StringIO()
    embedder, done = reembed.reembed(store, batch=2, out=bar)
    assert done == 3 and store.embedder_counts() == {embedder: 3} and store.embedder_dims()[embedder] == 384
    assert "\r[" in bar.getvalue() and "3/3 snippets" in bar.getvalue()
    assert reembed.reembed(store, batch=2, out=io.StringIO())[1] == 0
    store.close()


@pytest.mark.slow
def test_reembed_rechunk_cuts_a_document_again(client, worker):
    from docenrich.cli import reembed
    from docenrich.records import Snippet
    from docenrich.storage import SQLiteStore as Store

    marker = uuid.uuid4().hex[:8]
    doc = upload(client, pdf_with_text(f"Rechunk {marker}: the first page.", "The second page."), f"rc-{marker}.pdf")
    wait_ready(client, doc["id"])
    store = Store(os.environ["DATA_DIR"])
    fresh = [(s.ordinal, s.text) for s in store.snippets(doc["id"])]
    # A snippet left by an older chunking: a different ordinal and text.
    store.save_batch(doc["id"], 0, [Snippet(text="An old, overlong chunk.", page=1, document_id=doc["id"], ordinal=999)])
    assert len(store.snippets(doc["id"])) == len(fresh) + 1
    bar = io.StringIO()
    assert reembed.rechunk(store, out=bar, poll=0.2, doc_ids=[doc["id"]]) == 1
    assert [(s.ordinal, s.text) for s in store.snippets(doc["id"])] == fresh
    assert all(s.has_vector for s in store.snippets(doc["id"]))
    assert store.get_document(doc["id"]).state == "ready" and "page batches" in bar.getvalue()
    store.close()
