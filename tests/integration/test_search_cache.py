"""Searches through the app over the session's worker: the rerank depth follows the device and the
response counts it, and a repeated query is embedded once."""
from __future__ import annotations

import time

import pytest

from tests.helpers.pdfs import pdf_with_text
from tests.helpers.web import make_app, upload, wait_ready
from tests.helpers.workers import received

pytestmark = pytest.mark.slow


def search(client, **params) -> dict:
    response = client.get("/api/search", query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


@pytest.fixture(scope="module")
def paragraphs_doc(worker):
    app = make_app()
    client = app.test_client()
    paragraphs = [f"Paragraph {i} about tidal pools, starfish number {i} and the lighthouse keeper." for i in range(40)]
    doc = upload(client, pdf_with_text(*(" ".join(paragraphs[i:i + 4]) for i in range(0, 40, 4))), "pools.pdf")
    return wait_ready(client, doc["id"])


def test_rerank_depth_follows_the_device_and_the_response_counts_it(worker, paragraphs_doc):
    client = make_app().test_client()
    body = search(client, q="starfish in tidal pools", k=3, document=paragraphs_doc["id"])
    # The session worker runs on the CPU: the CPU depth, and every candidate up to it was scored.
    assert body["reranked"] is True and body["rerank_depth"] == 20
    assert 3 <= body["reranked_count"] <= 20
    assert body["reranked_count"] == min(20, paragraphs_doc["snippet_count"])
    chosen = make_app(SEARCH_RERANK_TOP_N=4).test_client()
    body = search(chosen, q="starfish in tidal pools", k=3, document=paragraphs_doc["id"])
    assert body["rerank_depth"] == 4 and body["reranked_count"] == 4
    body = search(client, q="starfish in tidal pools", k=3, rerank=0)
    assert body["reranked"] is False and body["reranked_count"] == 0 and body["rerank_depth"] == 0


def test_a_repeated_query_is_embedded_once(worker, paragraphs_doc):
    client = make_app().test_client()
    query = f"lighthouse keeper and starfish {time.time_ns()}"
    first = search(client, q=query, k=5, rerank=0)
    before = received(worker.log_text(), "get_sentence_embedding")
    second = search(client, q=query, k=5, rerank=0)
    assert first["query_cached"] is False and second["query_cached"] is True
    assert [r["snippet_id"] for r in second["results"]] == [r["snippet_id"] for r in first["results"]]
    time.sleep(1.0)  # a grace period for what must not happen: a message sent anyway is logged by now
    assert received(worker.log_text(), "get_sentence_embedding") == before
    third = search(client, q=query + " tides", k=5, rerank=0)
    assert third["query_cached"] is False
