"""The PDF rendering of an upload in another format, on both backends: kept beside the uploaded file
(which stays as it came), read for pages, replaced on a second save, and gone with its document."""
from __future__ import annotations

from docenrich import formats, uploads
from docenrich.storage import renditions
from tests.helpers import formats as samples
from tests.storeutil import pdf_bytes


def test_rendition_is_kept_beside_the_upload_and_goes_with_it(any_store):
    docx = samples.BY_KIND["docx"].read()
    info = uploads.check(docx, "letter.docx", uploads.Limits(100, 1000, 10)) if formats.soffice() else None
    doc, created = any_store.add_document(docx, "letter.docx", info)
    assert created and renditions.load(any_store, doc.id) is None
    assert renditions.pdf_bytes(any_store, doc.id) == docx  # nothing converted yet: the upload itself

    first, second = pdf_bytes("First rendering."), pdf_bytes("Second rendering.")
    renditions.save(any_store, doc.id, first)
    assert renditions.pdf_bytes(any_store, doc.id) == first and any_store.pdf_bytes(doc.id) == docx
    renditions.save(any_store, doc.id, second)
    assert renditions.load(any_store, doc.id) == second

    again, created = any_store.add_document(docx, "copy.docx", info)
    assert again.id == doc.id and not created  # the same file twice is one document
    assert any_store.delete_document(doc.id)
    assert renditions.load(any_store, doc.id) is None


def test_a_rendition_of_a_deleted_document_is_not_kept(any_store):
    doc, _ = any_store.add_document(samples.BY_KIND["html"].read(), "page.html")
    any_store.delete_document(doc.id)
    renditions.save(any_store, doc.id, pdf_bytes("Too late."))
    assert renditions.load(any_store, doc.id) is None
