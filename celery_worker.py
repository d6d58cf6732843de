"""Celery tasks: thin wrappers over snippets, model_manager and store.

Model tasks (queues `interactive` and `models`) run in the single-model worker; document
tasks (queue `docs`) run wherever a docs worker listens. Nothing here imports torch at
module level: the web process imports this module for the task signatures only.
"""
from __future__ import annotations

import gc
import json
import logging
import math
import os
import time
from typing import Any

import numpy as np
from celery import Task, bootsteps, signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import model_manager
from celery_config import MODEL_STATUS_KEY
from celery_config import celery_app
from model_manager import BadInput, ModelError, ModelUnavailable
from settings import get_settings
from snippets import PDFError, Snippet

log = logging.getLogger(__name__)

DELIVERY_KEY = "docenrich:deliveries:{task_id}:{retries}"


class WorkerLostTooOften(RuntimeError):
    """The task killed its worker on every delivery; it is failed instead of looping."""


def _redis():
    return celery_app.backend.client


class DocenrichTask(Task):
    """Base task: bounded retries with exponential backoff and jitter, a delivery cap."""

    abstract = True
    autoretry_for = (ModelError, RedisConnectionError, RedisTimeoutError, OperationalError, ConnectionError)
    dont_autoretry_for = (ModelUnavailable, BadInput, PDFError, WorkerLostTooOften, SoftTimeLimitExceeded)
    # Expected failures: logged as one line, without a traceback.
    throws = (ModelUnavailable, BadInput, PDFError)
    max_retries = get_settings().task_max_retries
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True

    def __call__(self, *args, **kwargs):
        if not self.request.called_directly and self.request.id:
            self._count_delivery()
        return super().__call__(*args, **kwargs)

    def _count_delivery(self) -> None:
        # acks_late + reject_on_worker_lost redeliver a task whose worker died; one that
        # kills its worker every time would loop forever without this count.
        key = DELIVERY_KEY.format(task_id=self.request.id, retries=self.request.retries)
        try:
            client = _redis()
            count = client.incr(key)
            client.expire(key, get_settings().result_expires)
        except (RedisConnectionError, RedisTimeoutError):
            return
        cap = get_settings().task_max_deliveries
        if count > cap:
            raise WorkerLostTooOften(
                f"the worker died {count - 1} times while running this task; giving up after {cap} deliveries"
            )


def _model_call(fn, *args):
    """Run a model call, turning accelerator out-of-memory into a retryable error."""
    try:
        return fn(*args)
    except (ModelError, BadInput):
        raise
    except Exception as exc:
        if model_manager._is_out_of_memory(exc):
            raise model_manager.get_manager().classify(exc) from exc
        raise


def _texts(value: Any, what: str = "text") -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value):
        return list(value)
    raise BadInput(f"{what} must be a string or a list of strings, not {type(value).__name__}")


# --------------------------------------------------------------------------- model tasks


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.get_sentence_embedding")
def get_sentence_embedding_task(self, text: str | list[str], with_model: bool = False):
    """Embed a string (one vector) or a list of strings (one row each), float32, L2-normalised."""
    texts = _texts(text)
    embedder = model_manager.get_manager().embedder()
    vectors = _model_call(embedder.encode, texts) if texts else np.zeros((0, embedder.dim or 0), np.float32)
    result = vectors[0] if isinstance(text, str) else vectors
    if with_model:
        return {"embedding": result, "model": model_manager.get_manager().effective_name("embedder"), "dim": embedder.dim}
    return result


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.enrich_snippets")
def enrich_snippets_task(self, snippets: list[Snippet]) -> list[Snippet]:
    """Fill in each snippet's embedding (and an image where it has none), batching the encoder."""
    if not isinstance(snippets, (list, tuple)) or not all(isinstance(s, Snippet) for s in snippets):
        raise BadInput("enrich_snippets_task takes a list of Snippet objects")
    manager = model_manager.get_manager()
    embedder = manager.embedder()
    name = manager.effective_name("embedder")
    batch = max(1, get_settings().model_batch_size)
    total = len(snippets)
    for start in range(0, total, batch):
        chunk = snippets[start : start + batch]
        vectors = _model_call(embedder.encode, [_embedding_text(s) for s in chunk])
        for snippet, vector in zip(chunk, vectors):
            snippet.embedding = vector
            snippet.embedding_model = name
            if not snippet.has_image:
                snippet.image = _text_card(snippet.text)
        if total > batch and self.request.id:
            self.update_state(state="PROGRESS", meta={"stage": "embedding", "done": start + len(chunk), "total": total})
    return list(snippets)


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.rerank")
def rerank_task(self, query: str, passages: list[str], normalize: bool = False) -> np.ndarray:
    """Score each passage against the query with the reranker (raw, or 0..1 with normalize)."""
    if not isinstance(query, str):
        raise BadInput(f"query must be a string, not {type(query).__name__}")
    passages = _texts(passages, "passages")
    if not passages:
        return np.zeros(0, np.float32)
    reranker = model_manager.get_manager().reranker()
    raw, normalized = _model_call(reranker.score, query, passages)
    return normalized if normalize else raw


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.ping")
def ping_task(self, payload: Any = None) -> dict:
    """A trivial task that returns at once, for round-trip checks and benchmarks."""
    return {"pid": os.getpid(), "payload": payload}


def _embedding_text(snippet: Snippet) -> str:
    meta = snippet.meta or {}
    text = snippet.text or meta.get("caption") or ""
    heading = meta.get("heading")
    # A snippet that continues a section is found by its heading too.
    if heading and heading not in text:
        return f"{heading}\n{text}"
    return text


def _text_card(text: str):
    """A small legible image of the text, for snippets a caller made without one."""
    from PIL import Image, ImageDraw

    lines, line = [], ""
    for word in (text or "").split():
        if len(line) + len(word) + 1 > 60:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
        if len(lines) >= 12:
            break
    if line and len(lines) < 12:
        lines.append(line)
    image = Image.new("L", (480, 16 * max(1, len(lines)) + 16), 255)
    draw = ImageDraw.Draw(image)
    for i, row in enumerate(lines):
        draw.text((8, 8 + 16 * i), row, fill=0)
    return image


# --------------------------------------------------------------------------- document pipeline


_store = None


def get_store():
    """The store of this process, opened on first use."""
    global _store
    if _store is None:
        from store import Store

        _store = Store(get_settings().data_dir)
    return _store


def batch_range(batch_index: int, pages: int) -> tuple[int, int]:
    """1-based inclusive page range of a batch."""
    size = get_settings().snippet_batch_pages
    start = batch_index * size + 1
    return start, min(pages, start + size - 1)


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
            store = get_store()
            doc = store.get_document(doc_id) if isinstance(doc_id, str) else None
            if doc is None or doc.state in ("ready", "failed"):
                return  # already failed with a more specific reason (PDFError, soft limit)
            batch = args[1] if len(args) > 1 else kwargs.get("batch_index")
            what = "processing the document"
            if isinstance(batch, int) and doc.pages:
                start, end = batch_range(batch, doc.pages)
                what = f"extracting pages {start}–{end}"
            if _is_time_limit(exc):
                error = f"{what} took longer than the time limit"
            else:
                error = f"{what} failed: {exc or type(exc).__name__}"
            store.update_document(doc_id, state="failed", stage="failed", error=error)
        except Exception:
            log.warning("could not mark document %s failed", doc_id, exc_info=True)


def _is_time_limit(exc: BaseException | None) -> bool:
    """A time limit, also when it struck inside a library that wrapped it (kombu's EncodeError
    while the batch is pickled for the model worker)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (TimeLimitExceeded, SoftTimeLimitExceeded)):
            return True
        seen.add(id(exc))
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = exc.__cause__ or exc.__context__ or inner
    return False


def submit_document(doc_id: str) -> str:
    """Queue a stored document for extraction; returns the task id."""
    return extract_document_task.delay(doc_id).id


@celery_app.task(bind=True, base=DocumentTask, name="docenrich.extract_document")
def extract_document_task(self, doc_id: str) -> dict:
    """Split a stored document into page batches and queue those not yet done."""
    store = get_store()
    doc = store.get_document(doc_id)
    if doc is None or doc.state in ("ready", "failed"):
        return {"document": doc_id, "queued": 0}
    pages = doc.pages
    if not pages:
        from snippets import page_count

        try:
            pages = page_count(store.pdf_path(doc_id))
        except PDFError as exc:
            store.update_document(doc_id, state="failed", stage="failed", error=str(exc))
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


@celery_app.task(bind=True, base=DocumentTask, name="docenrich.extract_pages")
def extract_pages_task(self, doc_id: str, batch_index: int) -> dict:
    """Extract one page range and hand its snippets to the model worker."""
    from snippets import extract_snippets

    store = get_store()
    doc = store.get_document(doc_id)
    if doc is None or doc.state in ("ready", "failed") or batch_index in store.done_batches(doc_id):
        return {"document": doc_id, "batch": batch_index, "skipped": True}
    start, end = batch_range(batch_index, doc.pages)
    settings = get_settings()
    store.update_document(doc_id, state="extracting", stage=f"Extracting pages {start}–{end} of {doc.pages}")

    def progress(done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"stage": "extracting", "document": doc_id, "done": done, "total": total})

    try:
        found = extract_snippets(
            store.pdf_path(doc_id),
            doc_id,
            start_page=start,
            end_page=end,
            batch_pages=settings.snippet_batch_pages,
            target_tokens=settings.snippet_target_tokens,
            overlap_tokens=settings.snippet_overlap_tokens,
            image_max_px=settings.snippet_image_max_px,
            progress=progress if self.request.id else None,
        )
    except PDFError as exc:
        store.update_document(doc_id, state="failed", stage="failed", error=str(exc))
        raise
    except SoftTimeLimitExceeded:
        store.update_document(
            doc_id, state="failed", stage="failed", error=f"extracting pages {start}–{end} took longer than the time limit"
        )
        raise
    if not found:
        store_snippets_task.delay([], doc_id, batch_index)
    else:
        enrich_snippets_task.apply_async(
            (found,),
            link=store_snippets_task.s(doc_id, batch_index),
            link_error=document_failed_task.s(doc_id),
        )
    return {"document": doc_id, "batch": batch_index, "snippets": len(found)}


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.store_snippets")
def store_snippets_task(self, snippets: list[Snippet], doc_id: str, batch_index: int) -> dict:
    """Persist an embedded batch; the store marks the document ready when all are in."""
    store = get_store()
    doc = store.save_batch(doc_id, batch_index, snippets)
    if doc is None:
        return {"document": doc_id, "deleted": True}
    if doc.state not in ("ready", "failed"):
        store.update_document(
            doc_id, state="embedding", stage=f"Embedded {doc.batches_done} of {doc.batches_total} page batches"
        )
    return {"document": doc_id, "batch": batch_index, "state": doc.state, "snippets": len(snippets)}


@celery_app.task(name="docenrich.document_failed")
def document_failed_task(request, exc, traceback, doc_id: str) -> None:
    """Errback: a batch failed for good, so the document is failed with the reason."""
    reason = str(exc) or type(exc).__name__
    get_store().update_document(doc_id, state="failed", stage="failed", error=f"embedding failed: {reason}")


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


# --------------------------------------------------------------------------- worker lifecycle


def _worker_role() -> str:
    return os.environ.get("DOCENRICH_WORKER_ROLE", "all")


def _publish_status(status: dict) -> None:
    hostname = os.environ.get("DOCENRICH_WORKER_NAME", "unknown")
    status = {**status, "hostname": hostname, "published_at": time.time()}
    _redis().set(MODEL_STATUS_KEY.format(hostname=hostname), json.dumps(status), ex=24 * 3600)


@signals.worker_init.connect
def _prepare_parent(sender=None, **_):
    # Runs once in the worker's main process, before it forks the pool child: the slow
    # imports (and the weights, in host memory) are then inherited by every child, so
    # max-tasks-per-child recycling costs a fork, not an import and a load from disk.
    os.environ["DOCENRICH_WORKER_NAME"] = getattr(sender, "hostname", None) or "unknown"
    if _worker_role() == "docs":
        return
    settings = get_settings()
    start = time.perf_counter()
    model_manager.import_model_libraries()
    log.info("model libraries imported in %.2fs", time.perf_counter() - start)
    manager = model_manager.get_manager()
    manager.on_change = _safe_publish
    if settings.model_preload:
        manager.preload_host()
    # Celery runs gc.collect() before every fork; frozen, the imported libraries and the
    # preloaded weights are not scanned each time a child is recycled.
    gc.freeze()
    _safe_publish(manager.status())


def _safe_publish(status: dict) -> None:
    try:
        _publish_status(status)
    except Exception:
        log.warning("could not publish model status", exc_info=True)


@signals.worker_process_init.connect
def _prepare_child(**_):
    manager = model_manager.get_manager()
    manager.reset_after_fork()
    manager.on_change = _safe_publish
    _safe_publish(manager.status())


class RecoverDocuments(bootsteps.StartStopStep):
    """Queue document recovery each time this worker (re)connects to the broker, whatever its role.

    A worker killed outright, or a Redis restart, leaves the message it was running in
    Redis' unacked set until the visibility timeout (~40 min), and a Redis crash may lose
    the last second of queued messages. The store knows which page batches are missing,
    so recovery re-queues them at once (stored batches are skipped). `worker_ready` fires
    only at the first start, and a model worker must trigger it too: the lost message may
    be an embedding whose link stores the batch.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer):
        try:
            recover_documents_task.delay()
        except Exception:
            log.warning("could not queue document recovery", exc_info=True)


celery_app.steps["consumer"].add(RecoverDocuments)


@signals.worker_shutdown.connect
def _forget_status(**_):
    try:
        _redis().delete(MODEL_STATUS_KEY.format(hostname=os.environ.get("DOCENRICH_WORKER_NAME", "unknown")))
    except Exception:
        pass

