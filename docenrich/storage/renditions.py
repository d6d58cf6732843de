"""The PDF rendering of a document uploaded in another format (docs/formats.md), for both backends.

The uploaded file itself is what `Store.add_document` stores (its hash is the document's id, so
the same DOCX twice is one document) and what `Store.pdf_bytes` returns; pages, boxes and region
images are drawn from the rendering the docs worker made of it. SQLite keeps the rendering as
`thumbs/<doc_id>/rendition.pdf`, so it goes with the document's other page renderings when the
document is deleted; PostgreSQL keeps it in the `renditions` table (schema step 3), whose rows go
with their document by its foreign key.
"""
from __future__ import annotations

import logging
from pathlib import Path

from docenrich.storage.encoding import check_doc_id

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
        with store._write("the converted document") as conn:
            conn.execute(
                """INSERT INTO renditions (document_id, data) SELECT id, %s FROM documents WHERE id = %s
                   ON CONFLICT (document_id) DO UPDATE SET data = excluded.data""",
                (bytes(pdf), check_doc_id(doc_id)),
            )
        return
    from docenrich.storage.base import StorageError, reason
    from docenrich.storage.sqlite.blobs import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"Could not save the converted document: {reason(exc)}.") from exc
    atomic_write(path, bytes(pdf), "the converted document")
    if store.get_document(doc_id) is None:  # deleted meanwhile: its folder was removed before this write
        path.unlink(missing_ok=True)


def load(store, doc_id: str) -> bytes | None:
    """A document's PDF rendering, or None when it has none (a PDF upload, or not converted yet)."""
    path = _file(store, doc_id)
    if path is None:
        row = store._q("SELECT data FROM renditions WHERE document_id = %s", (check_doc_id(doc_id),)).fetchone()
        return None if row is None else bytes(row["data"])
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def pdf_bytes(store, doc_id: str) -> bytes:
    """The PDF a document's pages are drawn from: its rendering, else the uploaded file (a PDF upload)."""
    found = load(store, doc_id)
    return found if found is not None else store.pdf_bytes(doc_id)
