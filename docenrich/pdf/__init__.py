"""PDF → searchable snippets: validation, layout-aware chunking, region images, OCR fallback.

This is the only package of docenrich that opens PDFs. Everything is single-threaded and
streams page by page, so a worker's memory is bounded by one batch of pages.
"""
from __future__ import annotations

from docenrich.records import Snippet

from .document import DocumentInfo, inspect_pdf, page_count
from .errors import PDFError
from .extract import extract_snippets, iter_snippet_batches
from .render import page_size, render_page_thumbnail, render_regions

__all__ = [
    "DocumentInfo", "PDFError", "Snippet", "extract_snippets", "inspect_pdf", "iter_snippet_batches",
    "page_count", "page_size", "render_page_thumbnail", "render_regions",
]
