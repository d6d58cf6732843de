"""Region images drawn after extraction: on first display, or by an idle pass of the docs worker.

Extraction stores each snippet's page and bounding box; rendering its image costs about as
much again as extracting the text, so the pipeline leaves it for later (SNIPPET_IMAGES=lazy).
"""
from __future__ import annotations

import logging

from docenrich import imaging, pdf
from docenrich.config import get_settings
from docenrich.records import StoredSnippet
from docenrich.storage import renditions

log = logging.getLogger(__name__)


def draw(store, doc_id: str, snippets: list[StoredSnippet]) -> int:
    """Render and store the region images of some snippets of one document; how many were stored."""
    if not snippets:
        return 0
    settings = get_settings()
    regions = [(s.page, tuple(s.bbox) if s.bbox else None, s.kind) for s in snippets]
    images = pdf.render_regions(renditions.pdf_bytes(store, doc_id), regions, max_px=settings.snippet_image_max_px)
    items = [(s.id, *imaging.encode(img, s.kind)) for s, img in zip(snippets, images, strict=True) if img is not None]
    if len(items) < len(snippets):
        log.info("document %s: %d of %d regions could not be drawn", doc_id, len(snippets) - len(items), len(snippets))
    return store.set_snippet_images(items) if items else 0


def draw_one(store, snippet: StoredSnippet) -> StoredSnippet | None:
    """The snippet with its image drawn now if it had none (None if the snippet is gone)."""
    if not snippet.image_path:
        draw(store, snippet.document_id, [snippet])
        return store.get_snippet(snippet.id)
    return snippet
