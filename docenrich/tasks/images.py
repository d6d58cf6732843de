"""The idle pass that draws the region images extraction left for later (docs queue, lowest priority)."""
from __future__ import annotations

import logging
import time

from docenrich import lazy_images
from docenrich.celery_app import celery_app
from docenrich.pdf.errors import PDFError
from docenrich.records import READY
from docenrich.tasks.base import DocenrichTask
from docenrich.tasks.pipeline import get_store

log = logging.getLogger(__name__)

# Snippets drawn per store write, and seconds of drawing per task: the rest goes on in a new
# message at the back of the queue, so the next document's extraction never waits long.
CHUNK = 100
TASK_SECONDS = 5.0


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.render_images", throws=(PDFError,))
def render_images_task(self, doc_id: str, generation: int | None = None, after_ordinal: int = -1) -> dict:
    """Draw the missing region images of a ready document, a few seconds at a time."""
    store = get_store()
    doc = store.get_document(doc_id)
    if doc is None or doc.state != READY or (generation is not None and doc.generation != generation):
        return {"document": doc_id, "skipped": True}
    started, drawn = time.monotonic(), 0
    while time.monotonic() - started < TASK_SECONDS:
        todo = store.snippets_without_image(doc_id, CHUNK, after_ordinal=after_ordinal)
        if not todo:
            return {"document": doc_id, "images": drawn, "done": True}
        drawn += lazy_images.draw(store, doc_id, todo)
        after_ordinal = todo[-1].ordinal
    render_images_task.apply_async((doc_id, generation, after_ordinal))
    return {"document": doc_id, "images": drawn, "continued_after": after_ordinal}
