"""The document pipeline on the docs queue: extract page batches, store them with their vectors.

extract_document → extract_pages (one per page batch) → embed_batch (model worker, texts only)
→ store_snippets. The store knows which batches are in, so every step is idempotent and a
document is ready when its last batch lands.
"""
from __future__ import annotations

import logging
import math

from celery.exceptions import SoftTimeLimitExceeded

from docenrich import telemetry
from docenrich.celery_app import celery_app
from docenrich.config import get_settings
from docenrich.pdf.errors import PDFError
from docenrich.records import FINISHED_STATES, READY, Snippet, embedding_text
from docenrich.tasks import staging
from docenrich.tasks.base import DocenrichTask, is_time_limit, redis_client
from docenrich.tasks.model import embed_batch_task

log = logging.getLogger(__name__)

_store = None


def get_store():
    """The store of this process, opened on first use."""
    global _store
    if _store is None:
        from docenrich.storage import open_store

        _store = open_store(get_settings())
    return _store


def batch_range(batch_index: int, pages: int) -> tuple[int, int]:
    """1-based inclusive page range of a batch."""
    size = get_settings().snippet_batch_pages
    start = batch_index * size + 1
    return start, min(pages, start + size - 1)


def fail_document(doc_id: str, error: str) -> None:
    """Mark a document failed with a reason a person can read."""
    get_store().update_document(doc_id, state="failed", stage="failed", error=error)


class DocumentTask(DocenrichTask):
    """A document-pipeline task taking doc_id first: failing for good fails its document.

    Celery calls on_failure in the pool child when the task raises, and in the worker's
    main process when the hard time limit killed the child (which is what happens when
    the soft limit goes unheard inside MuPDF). Without this the document would show
    "extracting" for ever, with no reason.
    """

    abstract = True

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        doc_id = args[0] if args else kwargs.get("doc_id")
        try:
            doc = get_store().get_document(doc_id) if isinstance(doc_id, str) else None
            if doc is None or doc.state in FINISHED_STATES:
                return  # already failed with a more specific reason (PDFError, soft limit)
            batch = args[1] if len(args) > 1 else kwargs.get("batch_index")
            what = "processing the document"
            if isinstance(batch, int) and doc.pages:
                start, end = batch_range(batch, doc.pages)
                what = f"extracting pages {start}–{end}"
            if is_time_limit(exc):
                error = f"{what} took longer than the time limit"
            else:
                error = f"{what} failed: {exc or type(exc).__name__}"
            fail_document(doc_id, error)
        except Exception:
            log.warning("could not mark document %s failed", doc_id, exc_info=True)


@celery_app.task(bind=True, base=DocumentTask, name="docenrich.extract_document")
def extract_document_task(self, doc_id: str) -> dict:
    """Split a stored document into page batches and queue those not yet done."""
    store = get_store()
    doc = store.get_document(doc_id)
    if doc is None or doc.state in FINISHED_STATES:
        return {"document": doc_id, "queued": 0}
    pages = doc.pages
    if not pages:
        from docenrich.pdf import page_count

        try:
            pages = page_count(store.pdf_path(doc_id))
        except PDFError as exc:
            fail_document(doc_id, str(exc))
            return {"document": doc_id, "queued": 0, "error": str(exc)}
    total = max(1, math.ceil(pages / get_settings().snippet_batch_pages))
    store.begin_batches(doc_id, total)
    done = store.done_batches(doc_id)
    missing = [i for i in range(total) if i not in done]
    store.update_document(doc_id, state="extracting", pages=pages, stage=f"Queued {len(missing)} of {total} page batches")
    for index in missing:
        extract_pages_task.delay(doc_id, index)
    if not missing:
        store.save_batch(doc_id, total - 1, [])  # re-checks completion of a document whose last batch landed
    return {"document": doc_id, "queued": len(missing), "batches": total}


def _extract(task, doc_id: str, pages: int, start: int, end: int) -> list[Snippet]:
    """The snippets of one page range, failing the document on a PDF error or the soft limit."""
    from docenrich.pdf import extract_snippets

    settings = get_settings()

    def progress(done: int, total: int) -> None:
        task.update_state(state="PROGRESS", meta={"stage": "extracting", "document": doc_id, "done": done, "total": total})

    try:
        return extract_snippets(
            get_store().pdf_path(doc_id),
            doc_id,
            start_page=start,
            end_page=end,
            batch_pages=settings.snippet_batch_pages,
            target_tokens=settings.snippet_target_tokens,
            overlap_tokens=settings.snippet_overlap_tokens,
            image_max_px=settings.snippet_image_max_px,
            progress=progress if task.request.id else None,
        )
    except PDFError as exc:
        fail_document(doc_id, str(exc))
        raise
    except SoftTimeLimitExceeded:
        fail_document(doc_id, f"extracting pages {start}–{end} took longer than the time limit")
        raise


@celery_app.task(bind=True, base=DocumentTask, name="docenrich.extract_pages")
def extract_pages_task(self, doc_id: str, batch_index: int) -> dict:
    """Extract one page range and send its texts to the model worker; the snippets wait here."""
    store = get_store()
    doc = store.get_document(doc_id)
    if doc is None or doc.state in FINISHED_STATES or batch_index in store.done_batches(doc_id):
        return {"document": doc_id, "batch": batch_index, "skipped": True}
    start, end = batch_range(batch_index, doc.pages)
    store.update_document(doc_id, state="extracting", stage=f"Extracting pages {start}–{end} of {doc.pages}")
    found = _extract(self, doc_id, doc.pages, start, end)
    if not found:
        store_snippets_task.delay(None, doc_id, batch_index)
    else:
        staging.stage(doc_id, batch_index, found)
        embed_batch_task.apply_async(
            ([embedding_text(s) for s in found],),
            link=store_snippets_task.s(doc_id, batch_index),
            link_error=document_failed_task.s(doc_id),
        )
    return {"document": doc_id, "batch": batch_index, "snippets": len(found)}


def _with_vectors(embedded: dict | list | None, doc_id: str, batch_index: int) -> list[Snippet] | None:
    """The batch's snippets with their vectors attached, or None when the staged batch is gone."""
    if embedded is None:
        return []
    if isinstance(embedded, list):  # a caller chained enrich_snippets_task: snippets come whole
        return embedded
    snippets = staging.unstage(doc_id, batch_index)
    if snippets is None:
        return None
    vectors, name = embedded["vectors"], embedded["model"]
    if len(vectors) != len(snippets):
        raise ValueError(f"batch {batch_index}: {len(vectors)} vectors for {len(snippets)} snippets")
    for snippet, vector in zip(snippets, vectors):
        snippet.embedding, snippet.embedding_model = vector, name
    return snippets


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.store_snippets")
def store_snippets_task(self, embedded: dict | list | None, doc_id: str, batch_index: int) -> dict:
    """Persist an embedded batch; the store marks the document ready when all are in."""
    store = get_store()
    if batch_index in store.done_batches(doc_id):
        staging.drop(doc_id, batch_index)
        return {"document": doc_id, "batch": batch_index, "skipped": True}
    snippets = _with_vectors(embedded, doc_id, batch_index)
    if snippets is None:
        # The staged snippets expired or were lost with Redis: extract the batch again.
        log.warning("document %s: batch %d lost its staged snippets; extracting it again", doc_id, batch_index)
        extract_pages_task.delay(doc_id, batch_index)
        return {"document": doc_id, "batch": batch_index, "restarted": True}
    doc = store.save_batch(doc_id, batch_index, snippets)
    staging.drop(doc_id, batch_index)
    if doc is None:
        return {"document": doc_id, "deleted": True}
    _count_ingested(doc, batch_index, len(snippets))
    if doc.state not in FINISHED_STATES:
        store.update_document(
            doc_id, state="embedding", stage=f"Embedded {doc.batches_done} of {doc.batches_total} page batches"
        )
    return {"document": doc_id, "batch": batch_index, "state": doc.state, "snippets": len(snippets)}


def _count_ingested(doc, batch_index: int, snippets: int) -> None:
    """Telemetry for a stored batch: its snippets and pages, and the document if it is now ready."""
    start, end = batch_range(batch_index, doc.pages) if doc.pages else (1, 0)
    try:
        telemetry.record_ingest(redis_client(), snippets, max(0, end - start + 1), int(doc.state == READY))
    except Exception:  # monitoring must never fail a task
        log.debug("could not count an ingested batch", exc_info=True)


@celery_app.task(name="docenrich.document_failed")
def document_failed_task(request, exc, traceback, doc_id: str) -> None:
    """Errback: a batch failed for good, so the document is failed with the reason."""
    reason = str(exc) or type(exc).__name__
    fail_document(doc_id, f"embedding failed: {reason}")


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.recover_documents")
def recover_documents_task(self, stale_after: float = 0.0) -> list[str]:
    """Re-queue documents left unfinished by a restart; stored batches are not redone."""
    recovered = []
    for doc in get_store().unfinished_documents(older_than=stale_after):
        extract_document_task.delay(doc.id)
        recovered.append(doc.id)
    if recovered:
        log.info("re-queued %d unfinished documents: %s", len(recovered), ", ".join(recovered))
    return recovered
