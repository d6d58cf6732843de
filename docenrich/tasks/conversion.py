"""Before a document's pages are counted: the PDF rendering of an upload in another format, made once.

The docs worker converts, in bounded subprocesses (`docenrich.formats`), when the document task
first sees the document; web processes never convert. One conversion per document runs at a time
(a Redis key), so a recovery sweep that finds the document unfinished meanwhile leaves it alone.
"""
from __future__ import annotations

import logging
import time

from docenrich import formats
from docenrich.config import get_settings
from docenrich.keys import CONVERTING_KEY
from docenrich.storage import renditions

log = logging.getLogger(__name__)


class Busy(Exception):
    """Another worker is converting this document now."""


def page_source(store, doc, redis) -> bytes:
    """The PDF the document's pages come from, converting the upload first when it needs it.

    Raises PDFError (FormatError) when the file cannot be converted, Busy while another worker converts it.
    """
    fmt = formats.source_format(doc.metadata)
    if fmt is None:
        return store.pdf_bytes(doc.id)
    found = renditions.load(store, doc.id)
    if found is not None:
        return found
    settings = get_settings()
    budget = formats.Budget.from_settings(settings)
    key = CONVERTING_KEY.format(doc_id=doc.id, generation=doc.generation)
    if not redis.set(key, "1", nx=True, ex=int(budget.timeout) + 60):
        raise Busy(doc.id)
    try:
        store.update_document(doc.id, generation=doc.generation, state="extracting",
                              stage=f"Converting the {fmt.label} file to pages")
        paged = formats.to_pdf(store.pdf_bytes(doc.id), fmt, budget)
        renditions.save(store, doc.id, paged.pdf)
        if paged.title and not doc.title:
            store.update_document(doc.id, generation=doc.generation, title=paged.title)
        log.info("document %s: its %s file converted to %d pages", doc.id, fmt.kind, paged.pages)
        return paged.pdf
    finally:
        redis.delete(key)


def unconverted(store, doc) -> bool:
    """Whether the document came in another format and has no PDF rendering yet."""
    return formats.source_format(doc.metadata) is not None and renditions.load(store, doc.id) is None


def stale(doc) -> bool:
    """Whether the document has waited unchanged for longer than a conversion may take."""
    return time.time() - doc.updated_at > get_settings().convert_timeout + 60
