"""Tasks that need a model: embeddings, snippet enrichment, reranking (queues interactive and models).

Each task is thin: it checks its input, asks the one-model manager for the model it needs
(which swaps the accelerator's resident model on demand), and returns plain arrays.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from celery.exceptions import Ignore

from docenrich import cancel, leases, models
from docenrich.celery_app import INTERACTIVE_QUEUE, celery_app
from docenrich.config import get_settings
from docenrich.models.errors import BadInput, ModelError
from docenrich.records import Snippet, embedding_text
from docenrich.tasks import bounded, poison
from docenrich.tasks.base import DocenrichTask, redis_client
from docenrich.tasks.bounded import Carried

log = logging.getLogger(__name__)


def _model_call(fn, *args):
    """Run a model call, turning accelerator out-of-memory into a retryable error."""
    try:
        return fn(*args)
    except (ModelError, BadInput):
        raise
    except Exception as exc:
        if models.is_out_of_memory(exc):
            raise models.get_manager().classify(exc) from exc
        raise


def _texts(value: Any, what: str = "text") -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value):
        return list(value)
    raise BadInput(f"{what} must be a string or a list of strings, not {type(value).__name__}")


def _encode(embedder, texts: list[str]) -> tuple[np.ndarray, list[dict[int, float]] | None]:
    """Dense rows, plus lexical weights when the embedder makes them in the same pass (BGE-M3)."""
    if getattr(embedder, "sparse", False):
        return _model_call(embedder.encode_with_sparse, texts)
    return _model_call(embedder.encode, texts), None


def _encode_in_batches(task, texts: list[str], carried: Carried | None = None, continue_with=None,
                       sparse: bool = True, stop=None):
    """(vectors, embedder name, sparse weights or None) in timed micro-batches, with progress on
    long inputs; with continue_with, the task hands the rest to a new message when it should yield."""
    manager = models.get_manager()
    embedder = manager.embedder()
    name = manager.effective_name("embedder")
    batch = max(1, get_settings().model_batch_size)

    def encode(chunk: list[str]):
        return _encode(embedder, chunk) if sparse else (_model_call(embedder.encode, chunk), None)

    def progress(done: int, total: int) -> None:
        if stop is not None and done < total and stop():
            raise cancel.Cancelled()
        if total > batch and task.request.id:
            task.update_state(state="PROGRESS", meta={"stage": "embedding", "done": done, "total": total})

    bulk = (task.request.delivery_info or {}).get("routing_key") != INTERACTIVE_QUEUE
    out = bounded.encode_bounded(
        encode, texts, name, carried=carried, progress=progress, yield_with=continue_with,
        should_yield=bounded.yield_policy(redis_client(), bulk) if continue_with is not None else None,
    )
    vectors = out.vectors if out.done else np.zeros((0, embedder.dim or 0), np.float32)
    return vectors, name, out.sparse or None


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.get_sentence_embedding")
def get_sentence_embedding_task(self, text: str | list[str], with_model: bool = False,
                                carried: Carried | None = None):
    """Embed a string (one vector) or a list of strings (one row each), float32, L2-normalised."""
    texts = _texts(text)
    manager = models.get_manager()
    embedder = manager.embedder()
    vectors, _name, sparse = _encode_in_batches(
        self, texts, carried, sparse=with_model,
        continue_with=lambda done: self.replace(get_sentence_embedding_task.s(text, with_model, carried=done)),
    )
    single = isinstance(text, str)
    result = vectors[0] if single else vectors
    if with_model:
        # "sparse": BGE-M3's lexical weights {token id: weight} (one dict, or a list), else None.
        return {"embedding": result, "model": manager.effective_name("embedder"), "dim": embedder.dim,
                "sparse": sparse[0] if single and sparse else sparse}
    return result


class EmbedBatchTask(DocenrichTask):
    """embed_batch: once Celery has published the linked store message, the lease is handed to it."""

    abstract = True

    def on_replace(self, sig):
        # The rest of the batch goes on in a new message (same id): the lease says the broker
        # holds it, written only once it was sent; the continuation, sent by us, may take it.
        try:
            return super().on_replace(sig)
        except Ignore:
            lease = (self.request.kwargs or {}).get("lease")
            if lease:
                leases.hand_to_broker(lease, leases.EMBEDDING, leases.EMBEDDING, self.request.id)
            raise

    def on_success(self, retval, task_id, args, kwargs):
        # Celery sends link callbacks before on_success, so the store message (id next_task)
        # exists by now: recovery can find it lost, and this process stops renewing the lease.
        lease, next_task = kwargs.get("lease"), kwargs.get("next_task")
        if lease and next_task and isinstance(retval, dict) and not retval.get("skipped"):
            try:
                leases.hand_to_broker(lease, leases.EMBEDDING, leases.EMBEDDING, next_task)
            except Exception:
                log.warning("could not hand the lease of %s to its store step", lease, exc_info=True)


@celery_app.task(bind=True, base=EmbedBatchTask, name="docenrich.embed_batch", ignore_result=True)
def embed_batch_task(self, texts: list[str], lease: str | None = None, sender: str = "",
                     staged: str | None = None, next_task: str | None = None,
                     carried: Carried | None = None) -> dict:
    """The pipeline's embedding step: texts in, {"vectors", "model", "sparse", "owner"} out; no images travel here.

    With a lease, it runs only if it can take the batch's lease and the batch is still staged
    (not stored yet): a duplicate message returns {"skipped": True} and the store step ignores it.
    Done, it hands the lease to the linked store message `next_task` (in on_success).
    """
    texts = _texts(texts, "texts")
    if lease is not None:
        if staged is not None and not redis_client().exists(staged):
            return {"skipped": True}
        if not leases.claim(lease, leases.EMBEDDING, takes=(leases.EMBEDDING,), sender=sender):
            return {"skipped": True}
        if carried is None:  # a continuation is part of the same attempt
            try:
                attempts, reason = poison.begin(*poison.of_lease(lease))
            except BaseException:
                leases.release(lease)
                raise
            if poison.exhausted(attempts):
                # The store step records the batch's pages as failed; the document goes on.
                return {"given_up": reason or poison.DIED, "attempts": attempts, "owner": leases.owner_id()}
        log.info("embedding %s (%d texts)", lease.split(":", 2)[-1], len(texts))

    def continue_with(done: Carried) -> None:
        self.replace(embed_batch_task.s(texts, lease=lease, sender=leases.owner_id(), staged=staged,
                                        next_task=next_task, carried=done))

    stop = None
    if lease is not None:
        doc_id, run, _ = poison.of_lease(lease)
        stop = lambda: cancel.is_cancelled(redis_client(), doc_id, run)  # noqa: E731
    try:
        vectors, name, sparse = _encode_in_batches(self, texts, carried, continue_with, stop=stop)
    except Ignore:  # continued in a new message, which holds the lease now
        raise
    except cancel.Cancelled:
        leases.release(lease)
        return {"skipped": True}
    except BaseException as exc:
        if lease is not None:
            leases.release(lease)  # its retry (or recovery) takes the batch up again
            if carried is None and isinstance(exc, self.autoretry_for):
                poison.undo(*poison.of_lease(lease))
        raise
    if lease is not None:
        poison.succeeded(*poison.of_lease(lease))
    return {"vectors": vectors, "model": name, "sparse": sparse, "owner": leases.owner_id()}


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.enrich_snippets")
def enrich_snippets_task(self, snippets: list[Snippet], carried: Carried | None = None) -> list[Snippet]:
    """Fill in each snippet's embedding (and an image where it has none), batching the encoder."""
    if not isinstance(snippets, (list, tuple)) or not all(isinstance(s, Snippet) for s in snippets):
        raise BadInput("enrich_snippets_task takes a list of Snippet objects")
    vectors, name, sparse = _encode_in_batches(
        self, [embedding_text(s) for s in snippets], carried,
        lambda done: self.replace(enrich_snippets_task.s(list(snippets), carried=done)),
    )
    for i, (snippet, vector) in enumerate(zip(snippets, vectors)):
        snippet.embedding = vector
        snippet.embedding_model = name
        snippet.sparse = sparse[i] if sparse else None
        if not snippet.has_image:
            snippet.image = text_card(snippet.text)
    return list(snippets)


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.rerank")
def rerank_task(self, query: str, passages: list[str], normalize: bool = False) -> np.ndarray:
    """Score each passage against the query with the reranker (raw, or 0..1 with normalize)."""
    if not isinstance(query, str):
        raise BadInput(f"query must be a string, not {type(query).__name__}")
    passages = _texts(passages, "passages")
    if not passages:
        return np.zeros(0, np.float32)
    reranker = models.get_manager().reranker()
    raw, normalized = _model_call(reranker.score, query, passages)
    return normalized if normalize else raw


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.ping")
def ping_task(self, payload: Any = None) -> dict:
    """A trivial task that returns at once, for round-trip checks and benchmarks."""
    return {"pid": os.getpid(), "payload": payload}


def text_card(text: str):
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
