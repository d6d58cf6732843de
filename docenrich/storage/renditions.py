"""The PDF rendering of a document uploaded in another format (docs/formats.md), for both backends.

The uploaded file itself is what `Store.add_document` stores and `Store.pdf_bytes` returns; pages,
boxes and region images are drawn from the rendering the docs worker made of it.
"""
from __future__ import annotations

import logging

from docenrich.storage.encoding import check_doc_id
from docenrich.storage.tables import renditions

log = logging.getLogger(__name__)


def save(store, doc_id: str, pdf: bytes) -> None:
    """Keep a document's PDF rendering (replacing an earlier one); nothing is kept for a deleted document."""
    store._save(renditions, bytes(pdf), check_doc_id(doc_id))


def load(store, doc_id: str) -> bytes | None:
    """A document's PDF rendering, or None when it has none (a PDF upload, or not converted yet)."""
    return store._load(renditions, check_doc_id(doc_id))


def pdf_bytes(store, doc_id: str) -> bytes:
    """The PDF a document's pages are drawn from: its rendering, else the uploaded file (a PDF upload)."""
    found = load(store, doc_id)
    return found if found is not None else store.pdf_bytes(doc_id)
