"""The PDF rendering of a document uploaded in another format (docs/formats.md), for both backends.

The uploaded file itself is what `Store.add_document` stores and `Store.pdf_bytes` returns; pages,
boxes and region images are drawn from the rendering the docs worker made of it. SQLite keeps it as
`thumbs/<doc_id>/rendition.pdf`, so it goes with the document's page renderings when the document
is deleted; PostgreSQL in the `renditions` table, whose rows go with their document by its foreign key.
"""
from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa

from docenrich.storage.encoding import check_doc_id
from docenrich.storage.sqlite.blobs import atomic_write, read_file
from docenrich.storage.tables import documents, renditions

log = logging.getLogger(__name__)

FILE_NAME = "rendition.pdf"


def _file(store, doc_id: str) -> Path | None:
    """The rendering's path on a store that keeps files (SQLite), None on one that does not."""
    folder = getattr(store, "thumb_dir", None)
    return None if folder is None else Path(folder) / check_doc_id(doc_id) / FILE_NAME


def save(store, doc_id: str, pdf: bytes) -> None:
    """Keep a document's PDF rendering (replacing an earlier one); nothing is kept for a deleted document."""
    path = _file(store, doc_id)
    if path is None:
        insert = store._insert(renditions).from_select(["document_id", "data"], sa.select(
            documents.c.id, sa.literal(bytes(pdf), sa.LargeBinary)).where(documents.c.id == check_doc_id(doc_id)))
        with store._write("the converted document") as conn:
            conn.execute(insert.on_conflict_do_update(index_elements=["document_id"],
                                                      set_={"data": insert.excluded.data}))
        return
    atomic_write(path, bytes(pdf), "the converted document")
    if store.get_document(doc_id) is None:  # deleted meanwhile: its folder was removed before this write
        path.unlink(missing_ok=True)


def load(store, doc_id: str) -> bytes | None:
    """A document's PDF rendering, or None when it has none (a PDF upload, or not converted yet)."""
    path = _file(store, doc_id)
    if path is None:
        data = store._scalar(sa.select(renditions.c.data).where(renditions.c.document_id == check_doc_id(doc_id)))
        return None if data is None else bytes(data)
    return read_file(path)


def pdf_bytes(store, doc_id: str) -> bytes:
    """The PDF a document's pages are drawn from: its rendering, else the uploaded file (a PDF upload)."""
    found = load(store, doc_id)
    return found if found is not None else store.pdf_bytes(doc_id)
