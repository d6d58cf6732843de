"""Searches that stay fast: rerank depth by device, the query cache, no rerank call without a
reranker, and model tasks that yield to interactive work between timed micro-batches."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

from tests.conftest import wait_for
from tests.stack import text_pdf
from tests.test_api import make_app, pdf_with_text, upload, wait_ready

pytestmark = pytest.mark.slow

CONTINUED = "the rest continues in a new message"


def received(log_text: str, task: str) -> int:
    """How many messages of a task the worker received, from its log."""
    return len(re.findall(rf"Task docenrich\.{task}\[[^\]]+\] received", log_text))


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
    time.sleep(1.0)  # a message sent anyway would be logged by now
    assert received(worker.log_text(), "get_sentence_embedding") == before
    third = search(client, q=query + " tides", k=5, rerank=0)
    assert third["query_cached"] is False


def test_no_rerank_call_once_the_worker_said_it_has_no_reranker(make_stack):
    stack = make_stack()
    worker = stack.worker("norerank", RERANKER_MODEL=str(stack.root / "no-such-reranker"))
    web = stack.web()
    doc_id = stack.add_document(text_pdf(2, seed=3), "two.pdf")
    assert stack.wait_finished([doc_id])[doc_id].state == "ready"
    first = web.get("/api/search?q=section+text&k=3").json()
    assert first["reranked"] is False
    assert any(n.startswith("Reranking unavailable") for n in first["notes"]), first["notes"]
    wait_for(lambda: (worker.status(stack.app).get("models") or {}).get("reranker", {}).get("unavailable"), 30,
             what="the worker to publish that it has no reranker")
    time.sleep(3.5)  # the web app's cached worker status (3 s) now has it too
    calls = received(worker.log_text(), "rerank")
    again = web.get("/api/search?q=another+section&k=3").json()
    assert again["reranked"] is False and any(n.startswith("Reranking unavailable") for n in again["notes"])
    time.sleep(1.0)
    assert received(worker.log_text(), "rerank") == calls


def test_a_long_embedding_yields_to_a_query_and_stays_exact(make_stack, bundled_model):
    from sentence_transformers import SentenceTransformer

    stack = make_stack(EMBED_MICRO_BATCH_SECONDS="0.05", MODEL_TASK_SECONDS="0.3")
    worker = stack.worker("yielding")
    texts = [f"Sentence number {i} talks about rivers, bridges and the number {i * 7}." for i in range(600)]
    big = stack.app.send_task("docenrich.get_sentence_embedding", args=[texts], queue="models")
    wait_for(lambda: CONTINUED in worker.log_text() or big.ready(), 60,
             what="the long task to hand its rest to a new message")
    started = time.monotonic()
    query = stack.app.send_task("docenrich.get_sentence_embedding", args=["where is the bridge?"],
                                kwargs={"with_model": True}, queue="interactive")
    answer = query.get(timeout=60)
    waited = time.monotonic() - started
    assert not big.ready(), "the query should have been answered while the long task still ran"
    assert waited < 5.0, f"the query waited {waited:.1f}s behind the long task"
    vectors = big.get(timeout=300)
    # Many parts (more than the delivery cap of 3), same rows as one direct encode.
    assert worker.log_text().count(CONTINUED) >= 4
    direct = SentenceTransformer(bundled_model, device="cpu").encode(texts, normalize_embeddings=True)
    assert vectors.shape == direct.shape and np.allclose(vectors, direct, atol=1e-4)
    assert answer["embedding"].shape == (direct.shape[1],)


def test_a_continued_pipeline_embedding_stores_each_batch_once(make_stack):
    stack = make_stack(EMBED_MICRO_BATCH_SECONDS="0.02", MODEL_TASK_SECONDS="0.05", SNIPPET_BATCH_PAGES="4")
    worker = stack.worker("pipeline")
    doc_id = stack.add_document(text_pdf(8, seed=5, words=220), "eight.pdf")
    doc = stack.wait_finished([doc_id])[doc_id]
    assert doc.state == "ready" and doc.batches_done == doc.batches_total == 2
    log_text = worker.log_text()
    assert log_text.count(CONTINUED) >= 2, "the embedding should have continued in new messages"
    succeeded = re.findall(r"Task docenrich\.embed_batch\[[^\]]+\] succeeded in [\d.e-]+s: \{'vectors'", log_text)
    assert len(succeeded) == 2
    snippets = stack.store.snippets(doc_id)
    assert len(snippets) == doc.snippet_count > 8
    assert stack.store.unindexed_count(next(iter(stack.store.embedder_counts()))) == 0


def test_while_a_search_holds_the_worker_its_second_task_waits_for_no_micro_batch(make_stack):
    import redis

    from docenrich import client
    from docenrich.celery_app import MODEL_HOLDS_KEY

    # Micro-batches of about a second: waiting behind one would show.
    stack = make_stack(EMBED_MICRO_BATCH_SECONDS="1.0", MODEL_TASK_SECONDS="600", MODEL_BATCH_SIZE="64")
    worker = stack.worker("holding")
    words = " ".join(f"river{i} bridge harbour lantern" for i in range(60))
    texts = [f"Passage {i}: {words}" for i in range(400)]
    broker = redis.Redis.from_url(stack.redis.url)

    def interactive(text: str):
        return stack.app.send_task("docenrich.get_sentence_embedding", args=[text], queue="interactive")

    interactive("warm up").get(timeout=60)
    with client.model_hold(broker):  # the search's own tasks never wait for its hold
        started = time.monotonic()
        interactive("an idle worker answers at once").get(timeout=60)
        idle = time.monotonic() - started
    assert idle < 0.4, f"an interactive task on an idle worker took {idle:.2f}s under a hold"
    big = stack.app.send_task("docenrich.get_sentence_embedding", args=[texts], queue="models")
    wait_for(lambda: big.state == "PROGRESS" and big.info.get("done", 0) >= 64, 120,
             what="the long embedding to run its first micro-batches")

    with client.model_hold(broker):
        assert broker.zcard(MODEL_HOLDS_KEY) == 1
        interactive("where is the bridge?").get(timeout=60)  # waits for the micro-batch in flight
        time.sleep(0.2)  # the search retrieves its candidates meanwhile
        started = time.monotonic()
        second = interactive("which harbour has a lantern?").get(timeout=60)
        waited = time.monotonic() - started
    assert broker.zcard(MODEL_HOLDS_KEY) == 0, "the hold ends with the block"
    assert waited < 0.4, f"the second task waited {waited:.2f}s: a micro-batch ran in between"
    assert second.shape == (384,) and not big.ready(), "the long embedding was still running"
    vectors = big.get(timeout=600)
    assert vectors.shape == (400, 384) and CONTINUED in worker.log_text()


def test_micro_batches_are_sized_by_text_length_so_queries_do_not_skew_them():
    from docenrich.config import get_settings
    from docenrich.tasks.bounded import _Pace

    budget = get_settings().embed_micro_batch_seconds
    pace = _Pace()
    passages, queries = ["lorem ipsum " * 100] * 32, ["where is it?"] * 32
    assert pace.size("m", passages, 32) == 4  # nothing measured yet: a small first micro-batch
    pace.record("m", passages[:4], budget)  # four passages took the whole budget
    assert pace.size("m", passages, 32) in (3, 4) and pace.size("m", queries, 32) == 32  # 4, give or take rounding
    # Queries take a sliver of the time a passage does; counted per text they would make the next
    # micro-batch of passages far too long (32 of them), counted per character they do not.
    for _ in range(5):
        pace.record("m", queries[:1], budget * (12 + 64) / (4 * (1200 + 64)))
    assert pace.size("m", passages, 32) in (3, 4)
    assert pace.size("m", passages[:2], 32) == 2 and pace.size("m", [], 32) == 1
