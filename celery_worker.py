"""The worker's tasks, under the names callers know::

    from celery_worker import get_sentence_embedding_task
    get_sentence_embedding_task.delay("test").get()

The tasks live in `docenrich.tasks` (model tasks, the document pipeline, the worker's
lifecycle). Importing this module imports the task modules, as a worker does; the web app
and `bge.py` send tasks by name instead.
"""
from docenrich.celery_app import celery_app  # noqa: F401
from docenrich.tasks import (  # noqa: F401
    DocenrichTask,
    WorkerLostTooOften,
    document_failed_task,
    embed_batch_task,
    enrich_snippets_task,
    extract_document_task,
    extract_pages_task,
    get_sentence_embedding_task,
    ping_task,
    recover_documents_task,
    rerank_task,
    store_snippets_task,
)
