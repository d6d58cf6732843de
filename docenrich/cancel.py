"""Cancel a document's ingestion: its run ends, its output is dropped, its queued messages are
revoked, and running tasks stop at their next page batch or embedding micro-batch.

The store does the lasting part in one transaction (state `cancelled`, snippets and vectors gone,
a new generation, so every task of the old run does nothing). A Redis flag tells tasks that are
already running; they look at it between batches and micro-batches.
"""
from __future__ import annotations

import logging

from docenrich.keys import CANCELLED_KEY, LEASE_KEY
from docenrich.records import Document

log = logging.getLogger(__name__)

CANCELLED_TTL = 24 * 3600


class Cancelled(Exception):
    """The document this task works on was cancelled."""


def cancel(store, redis, control, doc_id: str) -> Document | None:
    """Cancel an unfinished document; None when it is gone or already finished."""
    doc = store.get_document(doc_id)
    if doc is None or doc.finished:
        return None
    done = store.cancel_document(doc_id)
    if done is None:
        return None
    run = doc.generation
    redis.set(CANCELLED_KEY.format(doc_id=doc_id, generation=run), "1", ex=CANCELLED_TTL)
    pattern = LEASE_KEY.format(doc_id=doc_id, generation=run, batch_index="*")
    keys = list(redis.scan_iter(match=pattern))
    held = [v.decode() if isinstance(v, bytes) else v for v in (redis.mget(keys) if keys else [])]
    # A lease held by the broker names its message: "stage||task id".
    task_ids = [v.split("|")[2] for v in held if v and v.count("|") >= 2 and v.split("|")[2]]
    if task_ids:
        control.revoke(task_ids)
    log.info("document %s run %d cancelled; %d queued messages revoked", doc_id, run, len(task_ids))
    return done


def is_cancelled(redis, doc_id: str, generation: int) -> bool:
    """Whether the run `generation` of a document was cancelled (asked between batches)."""
    return bool(redis.exists(CANCELLED_KEY.format(doc_id=doc_id, generation=generation)))
