"""The document pipeline on the docs queue: extract page batches, store them with their vectors.

extract_document → extract_pages (one per page batch) → embed_batch (model worker, texts only)
→ store_snippets. The store knows which batches are in, so every step is idempotent and a
document is ready when its last batch lands. Each step takes the batch's lease first
(`leases`), so a duplicate message does nothing, and carries the document's generation, so
a task of an earlier run of the document does nothing either.
"""
from __future__ import annotations

import logging
import math

from kombu.utils.uuid import uuid

from docenrich import cancel, leases, telemetry
from docenrich.celery_app import celery_app
from docenrich.config import get_settings
from docenrich.models.errors import BadInput, ModelUnavailable
from docenrich.pdf.errors import PDFError
from docenrich.records import FINISHED_STATES, READY, Snippet, embedding_text
from docenrich.storage import renditions
from docenrich.storage.base import TransientStorageError
from docenrich.tasks import conversion, poison, staging
from docenrich.errors import caused_by
from docenrich.tasks.base import DocenrichTask, is_connection_loss, is_time_limit, redis_client
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


def batch_pages_of(doc) -> int:
    """The page batch size fixed for a document (this process's setting only for old rows)."""
    if doc.batch_pages:
        return doc.batch_pages
    return get_store().fix_batch_pages(doc.id, get_settings().snippet_batch_pages) or get_settings().snippet_batch_pages


def batch_range(batch_index: int, pages: int, size: int) -> tuple[int, int]:
    """1-based inclusive page range of a batch of `size` pages."""
    start = batch_index * size + 1
    return start, min(pages, start + size - 1)


def fail_document(doc_id: str, error: str, generation: int | None = None) -> None:
    """Mark a document failed with a reason a person can read (only the run `generation`)."""
    get_store().update_document(doc_id, generation=generation, state="failed", stage="failed", error=error)


def current(doc_id: str, generation: int | None):
    """The document if `generation` is its current, unfinished run (None: whatever run is current)."""
    doc = get_store().get_document(doc_id)
    if doc is None or doc.state in FINISHED_STATES:
        return None
    if generation is not None and doc.generation != generation:
        log.info("document %s: a task of run %s arrived during run %s; ignored", doc_id, generation, doc.generation)
        return None
    return doc


class DocumentTask(DocenrichTask):
    """A document-pipeline task: failing for good fails its document (of the task's run).

    Celery calls on_failure in the pool child when the task raises, and in the worker's
    main process when the hard time limit killed the child (which is what happens when
    the soft limit goes unheard inside MuPDF). Without this the document would show
    "extracting" for ever, with no reason.
    """

    abstract = True
    doc_arg = 0  # position of doc_id in the task's arguments; batch_index and generation follow

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        args = list(args)[self.doc_arg :]
        doc_id = args[0] if args else kwargs.get("doc_id")
        batch = args[1] if len(args) > 1 else kwargs.get("batch_index")
        generation = args[2] if len(args) > 2 else kwargs.get("generation")
        if caused_by(exc, (TransientStorageError,)):
            # The database stayed away through every retry: not the document's fault. The batch's
            # lease is freed, and a recovery sweep queues the work again once the database answers.
            if isinstance(batch, int) and isinstance(generation, int):
                leases.release(leases.lease_key(doc_id, generation, batch))
            log.warning("document %s: the database stayed unavailable (%s); recovery will go on", doc_id, exc)
            return
        try:
            doc = get_store().get_document(doc_id) if isinstance(doc_id, str) else None
            if doc is None or doc.state in FINISHED_STATES:
                return  # already failed with a more specific reason (PDFError, soft limit)
            if self.retries_batches and isinstance(batch, int) and not isinstance(exc, PDFError) and doc.pages:
                batch_failed(doc, batch, exc, "extraction")
                return
            what = "processing the document"
            if isinstance(batch, int) and doc.pages:
                start, end = batch_range(batch, doc.pages, batch_pages_of(doc))
                what = f"{self.step} pages {start}–{end}"
            if is_time_limit(exc):
                error = f"{what} took longer than the time limit"
            else:
                error = f"{what} failed: {exc or type(exc).__name__}"
            fail_document(doc_id, error, generation)
        except Exception:
            log.warning("could not mark document %s failed", doc_id, exc_info=True)

    step = "extracting"
    # A failure of this task is a failure of one page batch: retried, then given up alone.
    retries_batches = False


def batch_failed(doc, batch_index: int, exc: BaseException | None, step: str) -> None:
    """One attempt at a page batch failed in `step` (extraction, embedding): try it again, or after
    BATCH_MAX_ATTEMPTS give its pages up."""
    key = leases.lease_key(doc.id, doc.generation, batch_index)
    leases.release(key)  # first: should counting fail (Redis away), recovery still finds the batch free
    attempts = poison.failed(doc.id, doc.generation, batch_index, poison.describe(exc, step))
    if poison.exhausted(attempts):
        give_up(doc, batch_index, attempts)
    else:
        log.warning("document %s: %s batch %d failed (attempt %d): %s; trying it again",
                    doc.id, step, batch_index, attempts, type(exc).__name__)
        _queue_batch(doc.id, doc.generation, batch_index, "")


def give_up(doc, batch_index: int, attempts: int, reason: str | None = None) -> None:
    """Record a batch's pages as failed with the reason; the document goes on without them."""
    start, end = batch_range(batch_index, doc.pages, batch_pages_of(doc))
    if reason is None:
        reason = poison.reason(doc.id, doc.generation, batch_index)
    text = poison.note(start, end, reason, attempts)
    log.warning("document %s run %d: %s", doc.id, doc.generation, text)
    saved = get_store().fail_batch(doc.id, batch_index, doc.generation, text)
    staging.drop(doc.id, doc.generation, batch_index)
    leases.release(leases.lease_key(doc.id, doc.generation, batch_index))
    if saved is not None and saved.state == READY and get_settings().snippet_images == "lazy":
        _queue_images(saved)


@celery_app.task(bind=True, base=DocumentTask, name="docenrich.extract_document", ignore_result=True)
def extract_document_task(self, doc_id: str, generation: int | None = None,
                          survey: leases.Survey | None = None) -> dict:
    """Fix a document's page batches and queue those not stored and not held by a live worker
    (`survey`: what a recovery sweep read of Redis once for all its documents)."""
    store = get_store()
    doc = current(doc_id, generation)
    if doc is None:
        return {"document": doc_id, "queued": 0}
    pages = doc.pages
    # A document of another format whose rendering is missing (moved to another store) is converted again.
    if not pages or conversion.unconverted(store, doc):
        from docenrich.pdf import page_count

        if survey is not None and conversion.unconverted(store, doc):
            # A recovery sweep never converts inline; a document whose conversion message was lost
            # (stale for longer than a conversion may take) gets a new one.
            if conversion.stale(doc):
                extract_document_task.delay(doc_id, doc.generation)
            return {"document": doc_id, "queued": 0, "converting": True}
        try:
            pages = page_count(conversion.page_source(store, doc, redis_client()))
        except conversion.Busy:
            return {"document": doc_id, "queued": 0, "converting": True}
        except PDFError as exc:
            fail_document(doc_id, str(exc), doc.generation)
            return {"document": doc_id, "queued": 0, "error": str(exc)}
    total = max(1, math.ceil(pages / batch_pages_of(doc)))
    store.begin_batches(doc_id, total)
    done = store.done_batches(doc_id)
    missing = [i for i in range(total) if i not in done]
    seen = leases.free_leases([leases.lease_key(doc_id, doc.generation, i) for i in missing], survey)
    free = [(i, value) for i, value in zip(missing, seen, strict=True) if value is not None]
    if free or doc.state == "queued":
        # Only when something is (re)queued: a recovery sweep that finds every batch held writes nothing.
        store.update_document(
            doc_id, generation=doc.generation, state="extracting", pages=pages,
            stage=f"Queued {len(missing)} of {total} page batches",
        )
    queued = [i for i, value in free if _queue_batch(doc_id, doc.generation, i, value)]
    if not missing:
        store.save_batch(doc_id, total - 1, [], doc.generation)  # re-checks completion of a document whose last batch landed
    return {"document": doc_id, "queued": len(queued), "batches": total, "held": len(missing) - len(free)}


def _queue_batch(doc_id: str, generation: int, index: int, seen: str) -> bool:
    """Send the next step of one batch whose lease was free (`seen`, if nobody took it since):
    embedding if it is staged, else extraction."""
    key = leases.lease_key(doc_id, generation, index)
    # A moment's claim, handed to the broker at once: no renewal thread (this may run in a
    # worker's main process, after a hard time limit, which must not fork while one holds a lock).
    if not leases.claim(key, leases.QUEUEING, seen=seen, renew=False):
        return False
    try:
        texts = staging.staged_texts(doc_id, generation, index)
        if texts is None:
            sent = extract_pages_task.delay(doc_id, index, generation, leases.owner_id())
            leases.hand_to_broker(key, leases.QUEUEING, leases.QUEUED, sent.id)
        else:
            _send_embedding(doc_id, generation, index, texts, leases.QUEUEING)
    except BaseException:
        leases.release(key)
        raise
    return True


def _send_embedding(doc_id: str, generation: int, index: int, texts: list[str], stage: str) -> None:
    """Send a staged batch's texts to the model worker, the store step linked; hand the lease on."""
    key = leases.lease_key(doc_id, generation, index)
    # The store step's message id is fixed now, so the model worker can hand the lease to it:
    # a store message lost on its way (a Redis restart) is then found by recovery like any other.
    store_id = uuid()
    sent = embed_batch_task.apply_async(
        (texts,),
        {"lease": key, "sender": leases.owner_id(), "staged": staging.staged_key(doc_id, generation, index),
         "next_task": store_id},
        link=store_snippets_task.s(doc_id, index, generation).set(task_id=store_id),
        link_error=document_failed_task.s(doc_id, generation, index),
    )
    leases.hand_to_broker(key, stage, leases.EMBEDDING, sent.id)


def _extract(task, doc, start: int, end: int) -> list[Snippet]:
    """The snippets of one page range, failing the document on a PDF error or the soft limit."""
    from docenrich.models.tokens import embedder_counter
    from docenrich.pdf import extract_snippets

    settings = get_settings()
    # Only the embedder's tokenizer is loaded here, never its weights: snippets are sized in its tokens.
    counter = embedder_counter(settings)

    def progress(done: int, total: int) -> None:
        task.update_state(state="PROGRESS", meta={"stage": "extracting", "document": doc.id, "done": done, "total": total})

    try:
        return extract_snippets(
            renditions.pdf_bytes(get_store(), doc.id),
            doc.id,
            start_page=start,
            end_page=end,
            batch_pages=batch_pages_of(doc),
            target_tokens=settings.snippet_target_tokens,
            overlap_tokens=settings.snippet_overlap_tokens,
            image_max_px=settings.snippet_image_max_px,
            # Lazy: the page and box are kept, the image is drawn later (first display or the idle pass).
            images=settings.snippet_images != "lazy",
            tables=settings.pdf_tables,
            progress=progress if task.request.id else None,
            count_tokens=counter,
            max_tokens=counter.max_tokens if counter else None,
        )
    except PDFError as exc:
        fail_document(doc.id, str(exc), doc.generation)
        raise


@celery_app.task(bind=True, base=DocumentTask, name="docenrich.extract_pages", ignore_result=True,
                 retries_batches=True)
def extract_pages_task(self, doc_id: str, batch_index: int, generation: int | None = None, sender: str = "") -> dict:
    """Extract one page range and send its texts to the model worker; the snippets wait here.

    Runs only if this batch's lease can be taken: a duplicate message (recovery racing the
    broker's redelivery) finds it held, or the batch stored, and does nothing.
    """
    store = get_store()
    doc = current(doc_id, generation)
    if doc is None or batch_index in store.done_batches(doc_id):
        return {"document": doc_id, "batch": batch_index, "skipped": True}
    key = leases.lease_key(doc_id, doc.generation, batch_index)
    if not leases.claim(key, leases.EXTRACTING, takes=(leases.QUEUED,), sender=sender):
        return {"document": doc_id, "batch": batch_index, "skipped": True}
    attempts = None
    try:
        attempts, reason = poison.begin(doc_id, doc.generation, batch_index)
        if poison.exhausted(attempts):
            give_up(doc, batch_index, attempts, reason)
            return {"document": doc_id, "batch": batch_index, "given_up": True}
        start, end = batch_range(batch_index, doc.pages, batch_pages_of(doc))
        store.update_document(doc_id, generation=doc.generation, state="extracting",
                              stage=f"Extracting pages {start}–{end} of {doc.pages}")
        log.info("document %s run %d: extracting batch %d (pages %d–%d)", doc_id, doc.generation, batch_index,
                 start, end)
        found = _extract(self, doc, start, end)
        if cancel.is_cancelled(redis_client(), doc_id, doc.generation):
            raise cancel.Cancelled(doc_id)
        poison.succeeded(doc_id, doc.generation, batch_index)  # before the embedding counts its own
        if not found:
            sent = store_snippets_task.delay(None, doc_id, batch_index, doc.generation)
            leases.hand_to_broker(key, leases.EXTRACTING, leases.EMBEDDING, sent.id)
        else:
            staging.stage(doc_id, doc.generation, batch_index, found)
            _send_embedding(doc_id, doc.generation, batch_index, [embedding_text(s) for s in found],
                            leases.EXTRACTING)
    except cancel.Cancelled:
        leases.release(key)
        log.info("document %s run %d was cancelled; batch %d dropped", doc_id, doc.generation, batch_index)
        return {"document": doc_id, "batch": batch_index, "cancelled": True}
    except BaseException as exc:
        leases.release(key)  # never left renewed by a task that is over: a retry or recovery takes it
        if isinstance(exc, self.autoretry_for) and attempts is not None:
            poison.undo(doc_id, doc.generation, batch_index)
        raise
    return {"document": doc_id, "batch": batch_index, "snippets": len(found)}


def _with_vectors(embedded: dict | list | None, doc_id: str, generation: int, batch_index: int) -> list[Snippet] | None:
    """The batch's snippets with their vectors attached, or None when the staged batch is gone."""
    if embedded is None:
        return []
    if isinstance(embedded, list):  # a caller chained enrich_snippets_task: snippets come whole
        return embedded
    snippets = staging.unstage(doc_id, generation, batch_index)
    if snippets is None:
        return None
    vectors, name = embedded["vectors"], embedded["model"]
    if len(vectors) != len(snippets):
        raise ValueError(f"{len(vectors)} vectors came back for {len(snippets)} snippets")
    sparse = embedded.get("sparse") or [None] * len(snippets)
    for snippet, vector, weights in zip(snippets, vectors, sparse, strict=True):
        snippet.embedding, snippet.embedding_model, snippet.sparse = vector, name, weights
    return snippets


class StoreTask(DocumentTask):
    """The store step: its document id comes after the embedding's result."""

    abstract = True
    doc_arg = 1
    step = "storing"


@celery_app.task(bind=True, base=StoreTask, name="docenrich.store_snippets", ignore_result=True)
def store_snippets_task(self, embedded: dict | list | None, doc_id: str, batch_index: int,
                        generation: int | None = None) -> dict:
    """Persist an embedded batch; the store marks the document ready when all are in."""
    store = get_store()
    doc = current(doc_id, generation)
    if isinstance(embedded, dict) and embedded.get("skipped"):
        return {"document": doc_id, "batch": batch_index, "skipped": True}  # a duplicate embedding did nothing
    if doc is None or batch_index in store.done_batches(doc_id):
        if doc is not None:
            staging.drop(doc_id, doc.generation, batch_index)
        return {"document": doc_id, "batch": batch_index, "skipped": True}
    key = leases.lease_key(doc_id, doc.generation, batch_index)
    sender = embedded.get("owner", "") if isinstance(embedded, dict) else ""
    if not leases.claim(key, leases.STORING, takes=(leases.EMBEDDING,), sender=sender):
        return {"document": doc_id, "batch": batch_index, "skipped": True}
    try:
        if isinstance(embedded, dict) and embedded.get("given_up"):
            give_up(doc, batch_index, int(embedded.get("attempts") or 0), embedded["given_up"])
            return {"document": doc_id, "batch": batch_index, "given_up": True}
        snippets = _with_vectors(embedded, doc_id, doc.generation, batch_index)
        if snippets is None:
            # The staged snippets expired or were lost with Redis: extract the batch again.
            log.warning("document %s: batch %d lost its staged snippets; extracting it again", doc_id, batch_index)
            sent = extract_pages_task.delay(doc_id, batch_index, doc.generation, leases.owner_id())
            leases.hand_to_broker(key, leases.STORING, leases.QUEUED, sent.id)
            return {"document": doc_id, "batch": batch_index, "restarted": True}
        saved = _save(store, doc, batch_index, snippets)
    except BaseException:
        leases.release(key)  # a retry (or recovery) takes it up again
        raise
    staging.drop(doc_id, doc.generation, batch_index)
    leases.release(key)
    if saved is None:
        return {"document": doc_id, "deleted": True}
    _count_ingested(saved, batch_index, len(snippets))
    if saved.state == READY and get_settings().snippet_images == "lazy":
        _queue_images(saved)
    if saved.state not in FINISHED_STATES:
        store.update_document(doc_id, generation=doc.generation, state="embedding",
                              stage=f"Embedded {saved.batches_done} of {saved.batches_total} page batches")
    return {"document": doc_id, "batch": batch_index, "state": saved.state, "snippets": len(snippets)}


def _queue_images(doc) -> None:
    """Queue the idle pass that draws the region images of a document that just became ready."""
    try:
        celery_app.send_task("docenrich.render_images", args=(doc.id, doc.generation))
    except Exception:  # the images are drawn on first display anyway
        log.warning("could not queue the image pass of %s", doc.id, exc_info=True)


def _save(store, doc, batch_index: int, snippets: list[Snippet]):
    """save_batch; a busy or unreachable database raises TransientStorageError, which is retried."""
    return store.save_batch(doc.id, batch_index, snippets, doc.generation)


def _count_ingested(doc, batch_index: int, snippets: int) -> None:
    """Telemetry for a stored batch: its snippets and pages, and the document if it is now ready."""
    start, end = batch_range(batch_index, doc.pages, batch_pages_of(doc)) if doc.pages else (1, 0)
    try:
        telemetry.record_ingest(redis_client(), snippets, max(0, end - start + 1), int(doc.state == READY))
    except Exception:  # monitoring must never fail a task
        log.debug("could not count an ingested batch", exc_info=True)


@celery_app.task(name="docenrich.document_failed", ignore_result=True)
def document_failed_task(request, exc, traceback, doc_id: str, generation: int | None = None,
                         batch_index: int | None = None) -> None:
    """Errback: a batch failed for good, so the document (of that run) is failed with the reason.

    A lost connection to Redis is not the batch's fault: its lease is freed, so recovery
    queues it again once Redis is back, and the document is left to finish.
    """
    if is_connection_loss(exc):
        if batch_index is not None and generation is not None:
            leases.forget_message(leases.lease_key(doc_id, generation, batch_index), leases.EMBEDDING, request.id)
        log.warning("document %s: a batch lost its connection (%s: %s); recovery will queue it again",
                    doc_id, type(exc).__name__, exc)
        return
    doc = current(doc_id, generation)
    if doc is not None and batch_index is not None and doc.pages and not isinstance(exc, (BadInput, ModelUnavailable)):
        try:
            batch_failed(doc, batch_index, exc, "embedding")  # once more, or its pages are given up
        except Exception:  # its lease is free: a recovery sweep queues it again
            log.warning("document %s: could not retry batch %d; recovery will", doc_id, batch_index, exc_info=True)
        return
    reason = str(exc) or type(exc).__name__
    fail_document(doc_id, f"embedding failed: {reason}", generation)


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.recover_documents", ignore_result=True)
def recover_documents_task(self, stale_after: float = 0.0) -> list[str]:
    """Re-queue the batches of unfinished documents that nobody alive holds; stored ones are not redone."""
    recovered = []
    survey = leases.survey(check_restart=True)
    for doc in get_store().unfinished_documents(older_than=stale_after):
        try:
            if extract_document_task(doc.id, doc.generation, survey).get("queued"):
                recovered.append(doc.id)
        except Exception:  # one document's trouble must not keep the others waiting
            log.warning("recovery of document %s failed; the next sweep tries again", doc.id, exc_info=True)
    if recovered:
        log.info("re-queued %d unfinished documents: %s", len(recovered), ", ".join(recovered))
    return recovered
