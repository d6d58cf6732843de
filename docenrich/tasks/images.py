"""The idle pass that draws the region images extraction left for later (docs queue, lowest priority)."""
from __future__ import annotations

import logging
import time

from docenrich import lazy_images
from docenrich.celery_app import DOCS_QUEUE, MODELS_QUEUE, celery_app, queue_keys
from docenrich.pdf.errors import PDFError
from docenrich.records import READY
from docenrich.tasks.base import DocenrichTask, redis_client
from docenrich.tasks.pipeline import get_store

log = logging.getLogger(__name__)

# Snippets drawn per store write, and seconds of drawing per task: the rest goes on in a new
# message at the back of the queue, so the next document's extraction never waits long.
CHUNK = 100
TASK_SECONDS = 5.0
# Seconds before a pass that found ingestion under way looks again.
IDLE_RETRY = 5.0


def _ingesting() -> bool:
    """Whether ingestion work waits in the docs or models queue (any priority level)."""
    try:
        client = redis_client()
        pipe = client.pipeline(transaction=False)
        for key in (*queue_keys(DOCS_QUEUE), *queue_keys(MODELS_QUEUE)):
            pipe.llen(key)
        return any(pipe.execute())
    except Exception:  # unknown: draw now rather than never
        log.debug("could not read the queues", exc_info=True)
        return False


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.render_images", ignore_result=True, throws=(PDFError,))
def render_images_task(self, doc_id: str, generation: int | None = None, after_ordinal: int = -1) -> dict:
    """Draw the missing region images of a ready document, a few seconds at a time."""
    store = get_store()
    doc = store.get_document(doc_id)
    if doc is None or doc.state != READY or (generation is not None and doc.generation != generation):
        return {"document": doc_id, "skipped": True}
    if _ingesting():
        # Idle work: while documents are being extracted or embedded, try again later.
        render_images_task.apply_async((doc_id, generation, after_ordinal), countdown=IDLE_RETRY)
        return {"document": doc_id, "deferred": True}
    started, drawn = time.monotonic(), 0
    while time.monotonic() - started < TASK_SECONDS:
        todo = store.snippets_without_image(doc_id, CHUNK, after_ordinal=after_ordinal)
        if not todo:
            return {"document": doc_id, "images": drawn, "done": True}
        drawn += lazy_images.draw(store, doc_id, todo)
        after_ordinal = todo[-1].ordinal
    render_images_task.apply_async((doc_id, generation, after_ordinal))
    return {"document": doc_id, "images": drawn, "continued_after": after_ordinal}
