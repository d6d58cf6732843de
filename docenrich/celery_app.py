"""The Celery app and its configuration: broker, serializers, queues, routes, limits, events.

Importing this module must stay cheap (no torch, no Flask, no task modules): monitoring
commands such as `celery -A celery_config:celery_app status` load it, and the web process
sends tasks by name through it. Workers import the tasks through `include`.
"""
from __future__ import annotations

import json

from celery import Celery
from celery.worker.control import inspect_command
from kombu import Queue

from docenrich.config import get_settings

# Queues, drained in this order by the model worker: a search's query embedding and
# reranking never wait behind an ingestion backlog.
INTERACTIVE_QUEUE = "interactive"
MODELS_QUEUE = "models"
DOCS_QUEUE = "docs"
ALL_QUEUES = (INTERACTIVE_QUEUE, MODELS_QUEUE, DOCS_QUEUE)

TASK_MODULES = ["docenrich.tasks"]

# Where each model worker publishes what its pool child holds: one hash, a JSON value per
# worker name, read in one HGETALL (never a scan of the keyspace).
from docenrich.keys import MODEL_HOLDS_KEY, MODEL_STATUS_KEY  # noqa: E402,F401

# Searches that will send the model worker a task (a query embedding, a rerank) before long:
# a sorted set of tokens scored by when each hold lapses. Ingestion's micro-batches pause while
# one is live, so the search's next task does not wait behind another micro-batch.


# Which time limits each task takes (Settings.time_limits); the public enrich_snippets task,
# whose size its caller chooses, keeps the global TASK_SOFT_TIME_LIMIT / TASK_TIME_LIMIT.
TASK_LIMIT_KINDS = {
    "docenrich.extract_pages": "extract",
    "docenrich.extract_document": "document",
    "docenrich.recover_documents": "document",
    "docenrich.document_failed": "document",
    "docenrich.store_snippets": "store",
    "docenrich.render_images": "images",
    "docenrich.embed_batch": "embed",
    "docenrich.get_sentence_embedding": "interactive",
    "docenrich.rerank": "interactive",
    "docenrich.ping": "interactive",
}


def task_limits(settings) -> dict[str, dict[str, int]]:
    """Celery task annotations: each task's soft and hard time limit."""
    out = {}
    for name, kind in TASK_LIMIT_KINDS.items():
        soft, hard = settings.time_limits(kind)
        out[name] = {"soft_time_limit": soft, "time_limit": hard}
    return out


def make_celery(settings=None) -> Celery:
    """Build the Celery app from settings."""
    settings = settings or get_settings()
    app = Celery("docenrich", broker=settings.broker_url, backend=settings.broker_url, include=TASK_MODULES)
    serializer = "auth" if settings.signing_enabled else "pickle"
    app.conf.update(
        # PIL images and numpy arrays cross the broker: pickle, and nothing else is accepted.
        # With signing, only signed messages and results are accepted (Celery refuses to start
        # otherwise): a client without the key cannot get pickle run by a worker or the web app.
        task_serializer=serializer,
        result_serializer=serializer,
        accept_content=[serializer],
        result_accept_content=[serializer],
        # Results are kept only for callers that wait for them (searches, bge.py, .delay() of the
        # public tasks), for minutes; pipeline tasks ignore theirs. No extended results: a
        # task's arguments (page texts, vectors) are not copied into Redis a second time.
        result_expires=settings.result_expires,
        result_extended=False,
        # A task is acknowledged only once done; a worker lost mid-task puts it back.
        # celery_worker caps how often that may happen per task.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        task_annotations=task_limits(settings),
        worker_max_tasks_per_child=settings.max_tasks_per_child,
        worker_concurrency=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Longer than the hard time limit, or Redis hands a running task to another worker.
            "visibility_timeout": settings.task_time_limit + 600,
            # Consume the listed queues strictly in order (interactive first) instead of round robin.
            "queue_order_strategy": "priority",
            # Message priorities within a queue (0 first): a batch that is ready to store
            # goes before the next page range is extracted, so progress moves steadily.
            "priority_steps": [0, 3, 6, 9],
            "sep": ":",
        },
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
        redis_socket_connect_timeout=5,
        redis_socket_timeout=30,
        redis_retry_on_timeout=True,
        task_default_queue=MODELS_QUEUE,
        task_queues=[Queue(name) for name in ALL_QUEUES],
        task_routes={
            "docenrich.extract_document": {"queue": DOCS_QUEUE, "priority": 3},
            "docenrich.extract_pages": {"queue": DOCS_QUEUE, "priority": 6},
            "docenrich.store_snippets": {"queue": DOCS_QUEUE, "priority": 0},
            "docenrich.document_failed": {"queue": DOCS_QUEUE, "priority": 0},
            "docenrich.recover_documents": {"queue": DOCS_QUEUE, "priority": 3},
            # Drawing images left for later is idle work: after everything else on the docs queue.
            "docenrich.render_images": {"queue": DOCS_QUEUE, "priority": 9},
            "docenrich.enrich_snippets": {"queue": MODELS_QUEUE},
            "docenrich.embed_batch": {"queue": MODELS_QUEUE},
            "docenrich.get_sentence_embedding": {"queue": MODELS_QUEUE},
            "docenrich.rerank": {"queue": MODELS_QUEUE},
            "docenrich.ping": {"queue": MODELS_QUEUE},
        },
    )
    if settings.signing_enabled:
        app.conf.update(
            security_key=settings.security_key,
            security_certificate=settings.security_certificate,
            security_cert_store=settings.security_cert_store,
            security_digest="sha256",
        )
        app.setup_security(
            allowed_serializers=["pickle"],
            key=settings.security_key,
            cert=settings.security_certificate,
            store=settings.security_cert_store,
            digest="sha256",
            serializer="pickle",
        )
    return app


celery_app = make_celery()


@inspect_command()
def current_model(state, **_):
    """`celery -A celery_config:celery_app inspect current_model`: the model a worker holds now."""
    raw = celery_app.backend.client.hget(MODEL_STATUS_KEY, state.consumer.hostname)
    return json.loads(raw) if raw else {"resident": None, "loaded": []}


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold one queue's messages: the queue itself and each priority level."""
    options = celery_app.conf.broker_transport_options or {}
    # Kombu's Redis transport keeps priorities other than 0 in lists named queue + sep + step.
    sep = options.get("sep", "\x06\x16")
    steps = [p for p in options.get("priority_steps", [0, 3, 6, 9]) if p]
    return [queue, *(f"{queue}{sep}{p}" for p in steps)]
