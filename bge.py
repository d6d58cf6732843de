"""The public Python API of docenrich: embeddings and reranking through the model worker.

Every call submits a Celery task and waits for its result with a timeout, so the calling
process never loads a model. Example::

    import bge
    vectors = bge.embed(["first passage", "second passage"])   # (2, dim) float32, L2-normalised
    query = bge.get_sentence_embedding("a question")            # (dim,)
    ranked = bge.rerank("a question", ["first passage", "second passage"])
    ranked.order                                                # passage indices, best first

The tasks themselves can be used directly too (in a process that may import the worker's
task modules; the web app never does)::

    from celery_worker import get_sentence_embedding_task
    get_sentence_embedding_task.delay("test").get()

This module sends tasks by name through `docenrich.client`, so importing it loads no
model library.
"""
from __future__ import annotations

import numpy as np

from docenrich import client
from docenrich.client import RerankerUnavailable, RerankResult, WorkerUnavailable

__all__ = [
    "WorkerUnavailable",
    "RerankerUnavailable",
    "RerankResult",
    "embed",
    "embed_query",
    "get_sentence_embedding",
    "rerank",
    "worker_models",
]


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
    return client.call(client.EMBED, (list(texts),), "embedding", timeout=timeout, interactive=interactive)


def get_sentence_embedding(text: str, *, timeout: float | None = None, interactive: bool = True) -> np.ndarray:
    """Embed one string.

    Returns:
        A float32 vector of shape (dim,), L2-normalised.

    Raises:
        WorkerUnavailable: no worker answered within the timeout.
    """
    return client.call(client.EMBED, (text,), "embedding", timeout=timeout, interactive=interactive)


def embed_query(text: str, *, timeout: float | None = None) -> tuple[np.ndarray, str]:
    """Embed a search query ahead of ingestion work.

    Returns:
        ``(vector, embedder)``: the (dim,) vector and the name of the embedder that made it,
        which is the vector space the stored snippets must be searched in.
    """
    return client.embed_query(text, timeout=timeout)


def rerank(query: str, passages: list[str], *, timeout: float | None = None, interactive: bool = True) -> RerankResult:
    """Rerank passages against a query with the configured reranker.

    Returns:
        A RerankResult with raw scores, 0..1 scores and the best-first order.

    Raises:
        RerankerUnavailable: the worker has no usable reranker.
        WorkerUnavailable: no worker answered within the timeout.
    """
    return client.rerank(query, passages, timeout=timeout, interactive=interactive)


def worker_models() -> dict[str, dict]:
    """What each model worker holds, as published by the workers.

    Returns:
        A dict from worker hostname to its status: the resident model, what is loaded in
        host memory, and each configured model's effective name and fallback state.
    """
    return client.worker_models()
