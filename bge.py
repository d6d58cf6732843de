"""The public Python API of docenrich: embeddings and reranking through the model worker.

Every call submits a Celery task and waits for its result with a timeout, so the calling
process never loads a model. Example::

    import bge
    vectors = bge.embed(["first passage", "second passage"])   # (2, dim) float32, L2-normalised
    query = bge.get_sentence_embedding("a question")            # (dim,)
    ranked = bge.rerank("a question", ["first passage", "second passage"])
    ranked.order                                                # passage indices, best first

The tasks themselves can be used directly too::

    from celery_worker import get_sentence_embedding_task
    get_sentence_embedding_task.delay("test").get()
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from celery.exceptions import TimeoutError as CeleryTimeout

from celery_config import INTERACTIVE_QUEUE, MODEL_STATUS_KEY, MODELS_QUEUE, celery_app
from celery_worker import enrich_snippets_task, get_sentence_embedding_task, rerank_task
from model_manager import ModelUnavailable
from settings import get_settings

__all__ = [
    "WorkerUnavailable",
    "RerankerUnavailable",
    "RerankResult",
    "embed",
    "embed_query",
    "get_sentence_embedding",
    "rerank",
    "enrich",
    "worker_models",
]


class WorkerUnavailable(TimeoutError):
    """No model worker answered in time.

    Raised when a task submitted by this module got no result before its timeout; the
    message says whether any worker is online at all.
    """


class RerankerUnavailable(RuntimeError):
    """The worker has no reranker it can load (not configured, not cached, or offline)."""


@dataclass
class RerankResult:
    """Scores of a rerank call.

    Attributes:
        scores: the reranker's own scores (logits), one per passage, in input order.
        normalized: the same scores mapped to 0..1 with a sigmoid, as the libraries'
            ``normalize=True`` does.
        order: passage indices sorted best first.
    """

    scores: np.ndarray
    normalized: np.ndarray
    order: np.ndarray


def _timeout(timeout: float | None) -> float:
    return get_settings().search_timeout if timeout is None else timeout


def _wait(async_result, timeout: float, what: str):
    try:
        return async_result.get(timeout=timeout, propagate=True, disable_sync_subtasks=False)
    except CeleryTimeout:
        async_result.revoke()
        online = _workers_online()
        hint = (
            "the worker is busy; try again, or raise the timeout"
            if online
            else "no worker is online; start one with `python start_celery_worker.py`"
        )
        raise WorkerUnavailable(f"{what} got no answer within {timeout:g}s: {hint}") from None


def _workers_online() -> list[str]:
    try:
        replies = celery_app.control.ping(timeout=1.0) or []
    except Exception:
        return []
    return [name for reply in replies for name in reply]


def _queue(interactive: bool) -> str:
    return INTERACTIVE_QUEUE if interactive else MODELS_QUEUE


def embed(texts: list[str], *, timeout: float | None = None, interactive: bool = False) -> np.ndarray:
    """Embed texts with the configured embedder.

    Args:
        texts: the strings to embed.
        timeout: seconds to wait for the worker (default: SEARCH_TIMEOUT).
        interactive: jump ahead of queued ingestion work (for a user waiting on a result).

    Returns:
        A float32 array of shape (len(texts), dim), each row L2-normalised.

    Raises:
        WorkerUnavailable: no worker answered within the timeout.
        ValueError: texts is not a list of strings.
    """
    if isinstance(texts, str):
        raise ValueError("embed() takes a list of strings; use get_sentence_embedding() for one string")
    timeout = _timeout(timeout)
    result = get_sentence_embedding_task.apply_async((list(texts),), queue=_queue(interactive), expires=timeout)
    return _wait(result, timeout, "embedding")


def get_sentence_embedding(text: str, *, timeout: float | None = None, interactive: bool = True) -> np.ndarray:
    """Embed one string.

    Returns:
        A float32 vector of shape (dim,), L2-normalised.

    Raises:
        WorkerUnavailable: no worker answered within the timeout.
    """
    timeout = _timeout(timeout)
    result = get_sentence_embedding_task.apply_async((text,), queue=_queue(interactive), expires=timeout)
    return _wait(result, timeout, "embedding")


def embed_query(text: str, *, timeout: float | None = None) -> tuple[np.ndarray, str]:
    """Embed a search query ahead of ingestion work.

    Returns:
        ``(vector, embedder)``: the (dim,) vector and the name of the embedder that made it,
        which is the vector space the stored snippets must be searched in.
    """
    timeout = _timeout(timeout)
    result = get_sentence_embedding_task.apply_async(
        (text,), {"with_model": True}, queue=INTERACTIVE_QUEUE, expires=timeout
    )
    out = _wait(result, timeout, "query embedding")
    return out["embedding"], out["model"]


def rerank(query: str, passages: list[str], *, timeout: float | None = None, interactive: bool = True) -> RerankResult:
    """Rerank passages against a query with the configured reranker.

    Returns:
        A RerankResult with raw scores, 0..1 scores and the best-first order.

    Raises:
        RerankerUnavailable: the worker has no usable reranker.
        WorkerUnavailable: no worker answered within the timeout.
    """
    timeout = _timeout(timeout)
    result = rerank_task.apply_async((query, list(passages)), queue=_queue(interactive), expires=timeout)
    try:
        raw = np.asarray(_wait(result, timeout, "reranking"), dtype=np.float32)
    except ModelUnavailable as exc:
        raise RerankerUnavailable(str(exc)) from exc
    normalized = (1.0 / (1.0 + np.exp(-raw.astype(np.float64)))).astype(np.float32)
    return RerankResult(scores=raw, normalized=normalized, order=np.argsort(-raw, kind="stable"))


def enrich(snippets: list, *, timeout: float | None = None) -> list:
    """Embed a list of `snippets.Snippet` objects; returns them with `embedding` filled in."""
    return _wait(enrich_snippets_task.delay(list(snippets)), _timeout(timeout), "snippet enrichment")


def worker_models() -> dict[str, dict]:
    """What each model worker holds, as published by the workers (hostname -> status)."""
    client = celery_app.backend.client
    out = {}
    for key in client.scan_iter(match=MODEL_STATUS_KEY.format(hostname="*")):
        raw = client.get(key)
        if raw:
            status = json.loads(raw)
            out[status.get("hostname", key)] = status
    return out
