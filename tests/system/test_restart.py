"""Stopping the whole service mid-ingestion, as Ctrl-C on `make run` does, loses and duplicates nothing."""
from __future__ import annotations

import pytest

from tests.helpers.pdfs import text_pdf
from tests.helpers.wait import wait_for
from tests.stack import assert_ingested_exactly_once, reference_snippets

pytestmark = pytest.mark.slow


def test_web_and_worker_stopped_mid_ingestion_finish_after_restart(make_stack):
    batch_pages, pages = 2, 60
    stack = make_stack(SNIPPET_BATCH_PAGES=batch_pages)
    pdf = text_pdf(pages, seed=41, sections=1, words=12)
    worker = stack.worker("before")
    web = stack.web("web-before")
    response = web.upload([("restart.pdf", pdf)])
    assert response.status == 202, response.body
    doc_id = response.json()["documents"][0]["id"]
    expected = reference_snippets(pdf, doc_id, batch_pages)

    wait_for(lambda: stack.store.get_document(doc_id).batches_done >= 1, 120, what="the first stored batch")
    # SIGTERM, as `make run` sends on Ctrl-C: the web app exits, the worker finishes its task.
    web.stop()
    worker.stop()
    stopped = stack.store.get_document(doc_id)
    assert stopped.state != "ready", "the test must stop the service mid-ingestion"
    assert 0 < stopped.batches_done < stopped.batches_total

    stack.worker("after")
    web = stack.web("web-after")
    stack.wait_finished([doc_id])
    assert_ingested_exactly_once(stack, doc_id, expected, batch_pages, pages // batch_pages)
    shown = web.get(f"/api/documents/{doc_id}").json()
    assert shown["state"] == "ready" and shown["snippet_count"] == len(expected)
