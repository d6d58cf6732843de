"""Poison batches end: a page batch that kills its worker's child on every attempt is given up
after BATCH_MAX_ATTEMPTS, the document ends ready with a note naming the pages, and the rest of
it is searchable. Faults are real: the pool child is SIGKILLed from inside the task."""
from __future__ import annotations

import urllib.parse

import pytest
import redis

from tests.helpers.pdfs import pdf_with_text

pytestmark = pytest.mark.slow

PAGES = [f"Page {n} tells of the lighthouse keeper number {n} and the harbour of town {n}." for n in range(1, 7)]


def search_pages(web, query: str) -> set[int]:
    body = web.get("/api/search?" + urllib.parse.urlencode({"q": query, "k": 20, "mode": "lexical"})).json()
    return {hit["page"] for hit in body["results"]}


@pytest.mark.parametrize("fault", ["extraction", "embedding"])
def test_a_batch_that_kills_its_child_every_time_is_given_up_and_the_document_ends_ready(make_stack, fault):
    pages = list(PAGES)
    if fault == "embedding":
        pages[2] += " Poisonword."
        env = {"TEST_KILL_EMBED_WORD": "Poisonword"}
    else:
        env = {"TEST_KILL_EXTRACT_PAGE": "3"}
    stack = make_stack(SNIPPET_BATCH_PAGES=2, **env)
    web = stack.web("poison-web")
    stack.workers_parallel(("poison-models", "models", None, {}), ("poison-docs", "docs", None, {}))
    response = web.upload([("poison.pdf", pdf_with_text(*pages))])
    assert response.status == 202, response.text
    doc_id = response.json()["documents"][0]["id"]
    doc = stack.wait_finished([doc_id], timeout=240)[doc_id]

    assert doc.state == "ready", (doc.state, doc.error)
    body = web.get(f"/api/documents/{doc_id}").json()
    assert body["notes"] == ["pages 3–4 could not be processed: the worker process died 3 times"], body
    assert "pages 3–4 could not be processed" in web.get(f"/documents/{doc_id}").text
    assert search_pages(web, "lighthouse keeper harbour") == {1, 2, 5, 6}
    for worker in stack.workers:
        assert worker.process.poll() is None, "the worker itself keeps running"


def test_when_every_batch_is_given_up_the_document_fails_with_the_reason(make_stack):
    stack = make_stack(SNIPPET_BATCH_PAGES=8, TEST_KILL_EXTRACT_PAGE="1")
    stack.worker("poison-all-docs", "docs")
    doc_id = stack.add_document(pdf_with_text(*PAGES[:2]), "all-poison.pdf")
    doc = stack.wait_finished([doc_id], timeout=240)[doc_id]
    assert doc.state == "failed", doc.state
    assert doc.error == "no page could be processed: pages 1–2 could not be processed: the worker process died 3 times"


def test_a_failure_between_claim_and_hand_off_frees_the_lease_and_the_batch_goes_through(make_stack, tmp_path):
    flag = tmp_path / "fail-staging-once"
    flag.touch()
    stack = make_stack(SNIPPET_BATCH_PAGES=2, TEST_FAIL_STAGE_ONCE=str(flag))
    stack.workers_parallel(("lease-models", "models", None, {}), ("lease-docs", "docs", None, {}))
    doc_id = stack.add_document(pdf_with_text(*PAGES), "lease.pdf")
    doc = stack.wait_finished([doc_id], timeout=120)[doc_id]
    assert not flag.exists(), "the failure was injected"
    assert doc.state == "ready" and not doc.notes and doc.batches_done == 3, (doc.state, doc.error)
    client = redis.Redis.from_url(stack.redis.url)
    assert client.keys("docenrich:lease:*") == [], "no lease is left renewed"
