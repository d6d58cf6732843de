"""Tasks that need a model: embeddings, snippet enrichment, reranking (queues interactive and models).

Each task is thin: it checks its input, asks the one-model manager for the model it needs
(which swaps the accelerator's resident model on demand), and returns plain arrays.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from docenrich import leases, models
from docenrich.celery_app import celery_app
from docenrich.config import get_settings
from docenrich.models.errors import BadInput, ModelError
from docenrich.records import Snippet, embedding_text
from docenrich.tasks.base import DocenrichTask, redis_client

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


def _encode_in_batches(task, texts: list[str]):
    """(vectors, embedder name, sparse weights or None), batch by batch, with progress on long inputs."""
    manager = models.get_manager()
    embedder = manager.embedder()
    name = manager.effective_name("embedder")
    batch = max(1, get_settings().model_batch_size)
    parts, sparse = [], []
    for start in range(0, len(texts), batch):
        vectors, weights = _encode(embedder, texts[start : start + batch])
        parts.append(vectors)
        sparse = None if weights is None else sparse + weights
        done = min(len(texts), start + batch)
        if len(texts) > batch and task.request.id:
            task.update_state(state="PROGRESS", meta={"stage": "embedding", "done": done, "total": len(texts)})
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim or 0), np.float32)
    return vectors, name, sparse or None


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.get_sentence_embedding")
def get_sentence_embedding_task(self, text: str | list[str], with_model: bool = False):
    """Embed a string (one vector) or a list of strings (one row each), float32, L2-normalised."""
    texts = _texts(text)
    manager = models.get_manager()
    embedder = manager.embedder()
    if texts and with_model:
        vectors, sparse = _encode(embedder, texts)
    else:
        vectors = _model_call(embedder.encode, texts) if texts else np.zeros((0, embedder.dim or 0), np.float32)
        sparse = None
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

    def on_success(self, retval, task_id, args, kwargs):
        # Celery sends link callbacks before on_success, so the store message (id next_task)
        # exists by now: recovery can find it lost, and this process stops renewing the lease.
        lease, next_task = kwargs.get("lease"), kwargs.get("next_task")
        if lease and next_task and isinstance(retval, dict) and not retval.get("skipped"):
            try:
                leases.hand_to_broker(lease, leases.EMBEDDING, leases.EMBEDDING, next_task)
            except Exception:
                log.warning("could not hand the lease of %s to its store step", lease, exc_info=True)


@celery_app.task(bind=True, base=EmbedBatchTask, name="docenrich.embed_batch")
def embed_batch_task(self, texts: list[str], lease: str | None = None, sender: str = "",
                     staged: str | None = None, next_task: str | None = None) -> dict:
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
        log.info("embedding %s (%d texts)", lease.split(":", 2)[-1], len(texts))
    try:
        vectors, name, sparse = _encode_in_batches(self, texts)
    except BaseException:
        if lease is not None:
            leases.release(lease)  # its retry (or recovery) takes the batch up again
        raise
    return {"vectors": vectors, "model": name, "sparse": sparse, "owner": leases.owner_id()}


@celery_app.task(bind=True, base=DocenrichTask, name="docenrich.enrich_snippets")
def enrich_snippets_task(self, snippets: list[Snippet]) -> list[Snippet]:
    """Fill in each snippet's embedding (and an image where it has none), batching the encoder."""
    if not isinstance(snippets, (list, tuple)) or not all(isinstance(s, Snippet) for s in snippets):
        raise BadInput("enrich_snippets_task takes a list of Snippet objects")
    vectors, name, sparse = _encode_in_batches(self, [embedding_text(s) for s in snippets])
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
