"""Calling the workers: tasks sent by name with timeouts, worker pings, model status, queue backlog.

`bge.py`, search and the web app use this module, so none of them imports a task module,
torch or the model manager: a message names its task, and the worker that consumes it runs it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from docenrich import leases
from docenrich.celery_app import (
    ALL_QUEUES,
    DOCS_QUEUE,
    INTERACTIVE_QUEUE,
    MODEL_HOLDS_KEY,
    MODEL_STATUS_KEY,
    MODELS_QUEUE,
    celery_app,
    queue_keys,
)
from docenrich.config import get_settings
from docenrich.models.base import sigmoid
from docenrich.models.errors import ModelUnavailable

log = logging.getLogger(__name__)

EMBED = "docenrich.get_sentence_embedding"
ENRICH = "docenrich.enrich_snippets"
RERANK = "docenrich.rerank"
PING = "docenrich.ping"
EXTRACT_DOCUMENT = "docenrich.extract_document"


class WorkerUnavailable(TimeoutError):
    """No model worker answered in time.

    Raised when a task submitted through this module got no result before its timeout; the
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


def timeout_or_default(timeout: float | None) -> float:
    """The caller's timeout, or SEARCH_TIMEOUT."""
    return get_settings().search_timeout if timeout is None else timeout


def send(name: str, args: tuple = (), kwargs: dict | None = None, *, queue: str | None = None,
         expires: float | None = None, **options: Any) -> AsyncResult:
    """Send a task by name; routes from the Celery configuration apply unless queue is given."""
    if queue is not None:
        options["queue"] = queue
    return celery_app.send_task(name, args=args, kwargs=kwargs or {}, expires=expires, **options)


def wait(result: AsyncResult, timeout: float, what: str) -> Any:
    """A task's result, or WorkerUnavailable saying whether any worker is online. The result is
    forgotten once read: Redis keeps nothing per search."""
    try:
        return result.get(timeout=timeout, propagate=True, disable_sync_subtasks=False)
    except CeleryTimeout:
        result.revoke()
        hint = (
            "the worker is busy; try again, or raise the timeout"
            if workers_online()
            else "no worker is online; start one with `docenrich worker`"
        )
        raise WorkerUnavailable(f"{what} got no answer within {timeout:g}s: {hint}") from None
    finally:
        _forget(result)


def _forget(result: AsyncResult) -> None:
    try:
        result.forget()
    except Exception:  # the result expires anyway; a lost Redis must not hide the answer
        log.debug("could not forget result %s", result.id, exc_info=True)


def call(name: str, args: tuple, what: str, *, timeout: float | None = None, interactive: bool = True,
         kwargs: dict | None = None) -> Any:
    """Send a model task to the interactive (or models) queue and wait for its result."""
    timeout = timeout_or_default(timeout)
    queue = INTERACTIVE_QUEUE if interactive else MODELS_QUEUE
    # The message expires when the caller stops waiting: no worker time for an abandoned answer.
    return wait(send(name, args, kwargs, queue=queue, expires=timeout), timeout, what)


def embed_query(text: str, *, timeout: float | None = None) -> tuple[np.ndarray, str]:
    """(vector, embedder name) for a search query, ahead of ingestion work."""
    vector, name, _ = embed_query_sparse(text, timeout=timeout)
    return vector, name


def embed_query_sparse(text: str, *, timeout: float | None = None) -> tuple[np.ndarray, str, dict | None]:
    """(vector, embedder name, lexical weights or None) for a search query; weights come from BGE-M3."""
    out = call(EMBED, (text,), "query embedding", timeout=timeout, kwargs={"with_model": True})
    return out["embedding"], out["model"], out.get("sparse")


def rerank(query: str, passages: list[str], *, timeout: float | None = None,
           interactive: bool = True) -> RerankResult:
    """Scores of passages against a query; RerankerUnavailable when the worker has no reranker."""
    try:
        raw = call(RERANK, (query, list(passages)), "reranking", timeout=timeout, interactive=interactive)
    except ModelUnavailable as exc:
        raise RerankerUnavailable(str(exc)) from exc
    raw = np.asarray(raw, dtype=np.float32)
    return RerankResult(scores=raw, normalized=sigmoid(raw), order=np.argsort(-raw, kind="stable"))


def submit_document(doc_id: str, generation: int | None = None) -> str:
    """Queue a stored document (its run `generation`) for extraction; returns the task id."""
    return send(EXTRACT_DOCUMENT, (doc_id, generation)).id


def workers_online(timeout: float = 1.0) -> list[str]:
    """Names of the workers that answer a broadcast ping within timeout, sorted."""
    try:
        # A connection of its own, closed after: a pooled one would keep the reply queue's
        # unanswered BRPOP and kombu drops it as stale on the next broadcast, losing its replies.
        with celery_app.connection_for_write() as connection:
            replies = celery_app.control.ping(timeout=timeout, connection=connection) or []
    except Exception as exc:
        log.warning("worker ping failed: %s", exc)
        return []
    return sorted(name for reply in replies for name in reply)


def worker_models(redis_client=None) -> dict[str, dict]:
    """What each live model worker holds (hostname -> status): one hash read and one heartbeat
    read, never a scan of the keyspace. A worker that stopped beating is left out (and forgotten)."""
    client = redis_client if redis_client is not None else celery_app.backend.client
    alive = leases.alive_workers(client)
    out, gone = {}, []
    for name, raw in client.hgetall(MODEL_STATUS_KEY).items():
        status = json.loads(raw)
        if status.get("worker") in alive:
            out[status.get("hostname") or name.decode()] = status
        elif time.time() - float(status.get("published_at") or 0) > 60:
            gone.append(name)  # its worker died without saying so
    if gone:
        client.hdel(MODEL_STATUS_KEY, *gone)
    return out


# A hold lapses by itself after this long, so a web process that dies mid-search stalls nothing.
HOLD_SECONDS = 2.0


@contextlib.contextmanager
def model_hold(redis_client=None) -> Iterator[None]:
    """Ask ingestion's micro-batches to pause while this block sends the model worker its tasks.

    Without it a search's rerank waits behind the micro-batch that started while its candidates
    were being retrieved. A broker error only loses the hint.
    """
    client = redis_client if redis_client is not None else celery_app.backend.client
    token = uuid.uuid4().hex
    try:
        now = time.time()
        pipe = client.pipeline(transaction=False)
        pipe.zremrangebyscore(MODEL_HOLDS_KEY, "-inf", now)
        pipe.zadd(MODEL_HOLDS_KEY, {token: now + HOLD_SECONDS})
        pipe.execute()
    except Exception:
        log.debug("could not set a model hold", exc_info=True)
    try:
        yield
    finally:
        try:
            client.zrem(MODEL_HOLDS_KEY, token)
        except Exception:
            log.debug("could not clear a model hold", exc_info=True)


def queue_lengths(redis_client) -> dict[str, int]:
    """Messages waiting in each Celery queue, priority levels included."""
    keys = {q: queue_keys(q) for q in ALL_QUEUES}
    pipe = redis_client.pipeline()
    for names in keys.values():
        for key in names:
            pipe.llen(key)
    counts = iter(pipe.execute())
    return {q: sum(next(counts) for _ in names) for q, names in keys.items()}


__all__ = [
    "DOCS_QUEUE",
    "RerankResult",
    "RerankerUnavailable",
    "WorkerUnavailable",
    "call",
    "embed_query",
    "queue_lengths",
    "rerank",
    "send",
    "submit_document",
    "wait",
    "worker_models",
    "workers_online",
]
