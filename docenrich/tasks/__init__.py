"""The Celery tasks. Workers import this package (Celery's `include`); the web process never does.

- `base`: the task base class (retries with backoff, the delivery cap) and failure helpers.
- `model`: tasks that need a model (embeddings, enrichment, reranking) on the models queues.
- `pipeline`: the document pipeline on the docs queue (extract, store, fail, recover).
- `images`: the idle pass that draws region images left for later.
- `lifecycle`: worker start-up, pool children, model status publishing, recovery on (re)connect.
"""
from docenrich.tasks import images, lifecycle, model, pipeline  # noqa: F401  (registers the tasks)
from docenrich.tasks.base import DocenrichTask, WorkerLostTooOften  # noqa: F401
from docenrich.tasks.model import (  # noqa: F401
    embed_batch_task,
    enrich_snippets_task,
    get_sentence_embedding_task,
    ping_task,
    rerank_task,
)
from docenrich.tasks.pipeline import (  # noqa: F401
    document_failed_task,
    extract_document_task,
    extract_pages_task,
    recover_documents_task,
    store_snippets_task,
)
