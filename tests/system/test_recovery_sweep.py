"""Recovery after a Redis restart: one sweep decides the restart once, for all its documents,
so every batch whose queued message Redis lost is queued again, not only the first document's."""
from __future__ import annotations

import uuid

import pytest
import redis

from tests.helpers.pdfs import text_pdf
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.slow


def test_a_redis_restart_is_seen_by_every_document_of_a_sweep(make_stack):
    from docenrich.keys import REDIS_RUN_KEY
    from docenrich.leases import lease_key
    from docenrich.pdf import inspect_pdf

    stack = make_stack(SNIPPET_BATCH_PAGES=4)
    client = redis.Redis.from_url(stack.redis.url)
    ids = []
    for i in range(3):
        data = text_pdf(4, seed=500 + i)
        doc, _ = stack.store.add_document(data, f"lost-{i}.pdf", inspect_pdf(data), batch_pages=4)
        stack.store.begin_batches(doc.id, 1)
        stack.store.update_document(doc.id, generation=doc.generation, state="extracting")
        # The broker held the batch's message when Redis restarted, and lost it.
        client.set(lease_key(doc.id, doc.generation, 0), f"queued||{uuid.uuid4()}", ex=86400)
        ids.append(doc.id)
    client.set(REDIS_RUN_KEY, "the run before the restart")
    stack.worker("sweep")  # a starting worker queues a recovery sweep
    done = stack.wait_finished(ids, timeout=120)
    assert [done[i].state for i in ids] == ["ready"] * 3


def test_a_handed_over_message_that_vanished_without_a_restart_is_queued_again(make_stack):
    from docenrich.keys import HANDOFF_TTL, REDIS_RUN_KEY
    from docenrich.leases import UNACKED_GRACE, lease_key
    from docenrich.pdf import inspect_pdf

    stack = make_stack(SNIPPET_BATCH_PAGES=4)
    client = redis.Redis.from_url(stack.redis.url)
    data = text_pdf(8, seed=510)
    doc, _ = stack.store.add_document(data, "vanished.pdf", inspect_pdf(data), batch_pages=4)
    stack.store.begin_batches(doc.id, 2)
    stack.store.update_document(doc.id, generation=doc.generation, state="extracting")
    # Batch 0's message was handed to the broker long enough ago and is in no queue (a consumer
    # took it off as Redis went down, before it entered the unacknowledged set). Batch 1's is
    # fresh: its message may still be on its way, so the first sweep leaves it (later ones do not).
    client.set(lease_key(doc.id, doc.generation, 0), f"queued||{uuid.uuid4()}", ex=HANDOFF_TTL - UNACKED_GRACE - 5)
    fresh = f"queued||{uuid.uuid4()}"
    client.set(lease_key(doc.id, doc.generation, 1), fresh, ex=HANDOFF_TTL)
    client.set(REDIS_RUN_KEY, client.info("server")["run_id"])  # no restart to notice
    worker = stack.worker("sweep")
    wait_for(lambda: "handed-over messages are in no queue" in worker.log_text(), 60, 0.1, "the first sweep")
    assert client.get(lease_key(doc.id, doc.generation, 1)).decode() == fresh
    assert stack.wait_finished([doc.id], timeout=120)[doc.id].state == "ready"
