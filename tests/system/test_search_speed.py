"""Searches that stay fast, each on a stack of its own: no rerank call without a reranker, and model
tasks that yield to interactive work between timed micro-batches. (The rerank depth and the query
cache are in tests/integration/test_search_cache.py.)"""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

from tests.helpers.pdfs import text_pdf
from tests.helpers.wait import wait_for
from tests.helpers.workers import received

pytestmark = pytest.mark.slow

CONTINUED = "the rest continues in a new message"


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

    def web_knows():
        models = web.get("/healthz").json().get("models", {}).get(worker.hostname, {}).get("models", {})
        return models.get("reranker", {}).get("unavailable")

    wait_for(web_knows, 30, 0.5, "the web app's cached worker status (3 s) to say so too")
    calls = received(worker.log_text(), "rerank")
    again = web.get("/api/search?q=another+section&k=3").json()
    assert again["reranked"] is False and any(n.startswith("Reranking unavailable") for n in again["notes"])
    time.sleep(1.0)  # a grace period for what must not happen: a rerank message sent anyway is logged by now
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
        time.sleep(0.2)  # on purpose: the search retrieves its candidates between its two tasks
        started = time.monotonic()
        second = interactive("which harbour has a lantern?").get(timeout=60)
        waited = time.monotonic() - started
    assert broker.zcard(MODEL_HOLDS_KEY) == 0, "the hold ends with the block"
    assert waited < 0.4, f"the second task waited {waited:.2f}s: a micro-batch ran in between"
    assert second.shape == (384,) and not big.ready(), "the long embedding was still running"
    vectors = big.get(timeout=600)
    assert vectors.shape == (400, 384) and CONTINUED in worker.log_text()


def test_searches_do_not_replace_the_models_child_and_embedding_tasks_do(make_stack):
    stack = make_stack()
    worker = stack.worker("budget", "models", MAX_TASKS_PER_CHILD="3")
    wait_for(lambda: len(worker.child_pids()) == 1, 30, 0.1, "the pool child")
    child = worker.child_pids()

    def embed(text, queue: str):
        kwargs = {"with_model": True} if queue == "interactive" else {}
        return stack.app.send_task("docenrich.get_sentence_embedding", args=[text], kwargs=kwargs,
                                   queue=queue).get(timeout=120)

    for i in range(30):  # 30 messages at 0.05: 1.5 of the 3 tasks a child runs
        assert len(embed(f"question number {i}", "interactive")["embedding"]) == 384
    time.sleep(1.5)  # a leaving child waits about a second for its last result to be read
    assert worker.child_pids() == child, "searches' messages replaced the models child"
    assert embed(["a passage to store"], "models").shape == (1, 384)
    time.sleep(1.5)
    assert worker.child_pids() == child
    embed(["another passage"], "models")  # 3.5 tasks' worth: the child leaves
    wait_for(lambda: worker.child_pids() not in ([], child), 30, 0.1, "a new pool child")
