"""Faults with real processes: a worker killed mid-document, Redis killed and restarted, time
limits. (A full or unwritable disk under the web app is in tests/integration/test_storage_faults.py.)

Every test here builds its own stack (tests/stack.py) so it can kill parts of it without
disturbing the session's worker.
"""
from __future__ import annotations

import time

import pytest

from tests.helpers.pdfs import bomb_pdf, doubled_pdf, text_pdf
from tests.helpers.wait import wait_for
from tests.stack import (
    Stack, assert_clean_json_error, assert_ingested_exactly_once, kill_mid_task, reference_snippets, snippet_rows,
    wait_in_flight,
)

pytestmark = pytest.mark.slow


def test_sigkilled_workers_mid_document_lose_and_duplicate_nothing(make_stack):
    """Whole-worker SIGKILL of the default (all queues) worker, then of a model worker.

    The killed worker's in-flight message stays in Redis' unacked set until the visibility
    timeout (~40 min); what must finish the document is the recovery a starting worker queues.
    """
    batch_pages, pages = 2, 24
    stack = make_stack(SNIPPET_BATCH_PAGES=batch_pages)
    # ~500 tokens a page: embedding a batch takes long enough to be caught in flight.
    first_pdf, second_pdf = text_pdf(pages, seed=21, sections=1, words=360), text_pdf(pages, seed=22, sections=1, words=360)

    # 1. The `make run` topology: one worker for every queue, killed mid-document.
    doc_a = stack.add_document(first_pdf, "first.pdf")
    expected_a = reference_snippets(first_pdf, doc_a, batch_pages)
    everything = stack.worker("all1")
    in_flight = kill_mid_task(stack, everything, doc_a, "docenrich.embed_batch")
    at_kill = stack.store.get_document(doc_a)
    print(f"all-queues worker killed at {at_kill.batches_done}/{at_kill.batches_total} batches; unacked: {in_flight}")
    assert at_kill.state != "ready" and in_flight

    # Restart as the scaled-out topology: a model worker and a document worker.
    models, docs = stack.workers_parallel(("models2", "models", None, None), ("docs2", "docs", None, None))
    stack.wait_finished([doc_a])
    assert "re-queued 1 unfinished documents" in docs.log_text()
    rows_a = assert_ingested_exactly_once(stack, doc_a, expected_a, batch_pages, pages // batch_pages)

    # Recovery is idempotent: again, plus a stray re-queue of the document, changes nothing.
    assert stack.app.send_task("docenrich.recover_documents", ignore_result=False).get(timeout=60) == []
    assert stack.app.send_task("docenrich.extract_document", args=[doc_a], ignore_result=False).get(timeout=60)["queued"] == 0
    assert snippet_rows(stack.data_dir, doc_a) == rows_a

    # 2. The model worker dies mid-embedding (its message, with the link that stores the
    # batch, is stuck in the unacked set); a replacement model worker starts.
    doc_b = stack.add_document(second_pdf, "second.pdf")
    expected_b = reference_snippets(second_pdf, doc_b, batch_pages)
    in_flight = kill_mid_task(stack, models, doc_b, "docenrich.embed_batch")
    print(f"model worker killed mid-embedding; unacked: {in_flight}")
    assert stack.store.get_document(doc_b).state != "ready"
    stack.worker("models3", "models")
    stack.wait_finished([doc_b], timeout=90)
    assert_ingested_exactly_once(stack, doc_b, expected_b, batch_pages, pages // batch_pages)
    assert snippet_rows(stack.data_dir, doc_a) == rows_a


# --------------------------------------------------------------------------- Redis restarted


def test_redis_killed_and_restarted_mid_ingestion(make_stack):
    stack = make_stack(SNIPPET_BATCH_PAGES=2)
    worker = stack.worker("redis-restart")
    web = stack.web("redis-restart-web")
    ids = []
    for i in range(3):
        resp = web.upload([(f"doc{i}.pdf", text_pdf(12, seed=30 + i, sections=1, words=12))])
        assert resp.status == 202, resp.text
        ids.append(resp.json()["documents"][0]["id"])

    wait_in_flight(stack, ids[0], "docenrich.embed_batch", min_batches=1)
    stack.redis.kill()  # SIGKILL: no final append-only write
    down_at = time.monotonic()

    late = text_pdf(3, seed=39, sections=1, words=12)

    def refused():
        resp = web.upload([("late.pdf", late)], timeout=30)
        return resp if resp.status == 503 else None

    resp = wait_for(refused, 30, 0.5, "uploads to be refused while Redis is down")
    body = assert_clean_json_error(resp, 503)
    assert "Redis" in body["error"] and int(resp.headers["Retry-After"]) > 0, body
    health = web.get("/healthz")
    assert health.status == 503 and health.json()["redis"]["ok"] is False
    assert Stack.PASSWORD not in health.text and "Traceback" not in health.text
    search = web.get("/api/search?q=alpha")
    assert_clean_json_error(search, 503)
    page = web.get("/")
    assert page.status == 200 and "Queue unreachable" in page.text
    assert web.get("/api/documents").status == 200  # what is stored stays readable
    print(f"refused with 503 {time.monotonic() - down_at:.1f}s after the kill: {body['error']}")

    stack.restart_redis()  # same port, same append-only file
    up_at = time.monotonic()

    def accepted():
        resp = web.upload([("late.pdf", late)], timeout=30)
        return resp if resp.status == 202 else None

    resp = wait_for(accepted, 30, 0.5, "the web app to accept uploads again")
    print(f"web app accepts uploads again {time.monotonic() - up_at:.1f}s after Redis is back")
    ids.append(resp.json()["documents"][0]["id"])
    done = stack.wait_finished(ids, timeout=120)
    print(f"all {len(ids)} documents finished {time.monotonic() - up_at:.1f}s after Redis is back")
    assert {d.state for d in done.values()} == {"ready"}, {k: (d.state, d.error) for k, d in done.items()}
    assert worker.process.poll() is None, "the worker reconnects by itself"


# --------------------------------------------------------------------------- time limits


def test_time_limits_fail_the_task_and_spare_the_worker(make_stack):
    from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

    # Eager images: drawing the bomb's page inflates its content stream inside MuPDF, which is what
    # the last part needs (text alone may come out of it within the limit on a fast machine).
    stack = make_stack(TASK_SOFT_TIME_LIMIT=2, TASK_TIME_LIMIT=4, SNIPPET_BATCH_PAGES=4096, SNIPPET_IMAGES="eager")
    worker = stack.worker("limits", "docs")  # document work only: no model needed
    main_pid = worker.process.pid

    def on_docs(name, *args):
        return stack.app.send_task(name, args=args, queue="docs")

    # Soft limit: the task is told, fails, and says why.
    result = on_docs("tests.sleep", 3)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=30)
    assert result.state == "FAILURE" and "SoftTimeLimitExceeded" in (result.traceback or "")

    # Hard limit: a task that ignores the soft limit is killed with its pool child only.
    result = on_docs("tests.ignore_soft_limit", 30)
    child = wait_for(lambda: result.info.get("pid") if result.state == "PROGRESS" else None, 30, 0.1,
                     "the stubborn task to start")
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    assert time.monotonic() - started < 10 and result.state == "FAILURE"
    assert worker.process.poll() is None and worker.process.pid == main_pid
    assert on_docs("tests.sleep", 0.1).get(timeout=30) == 0.1, "the next task runs"
    new_children = worker.child_pids()
    assert child not in new_children and new_children, (child, new_children)

    # An extraction that runs out of time on every attempt: its pages are given up, and as they are
    # all the document has, it fails with the reason in words.
    slow = stack.add_document(doubled_pdf(10), "thousand-pages.pdf")  # 1,024 pages in one batch
    doc = stack.wait_finished([slow], timeout=90)[slow]
    assert doc.state == "failed", (doc.state, doc.stage)
    assert "pages 1–1024 could not be processed: the extraction timed out 3 times" in doc.error, doc.error
    print(f"slow extraction: {doc.error}")

    # The same when the time goes inside MuPDF, where the soft limit cannot interrupt and
    # the hard limit kills the pool child: a 1 GiB content stream inflated 8 times (~2 s each here).
    bomb = stack.add_document(bomb_pdf("content", repeats=8), "bomb.pdf")
    doc = stack.wait_finished([bomb], timeout=120)[bomb]
    assert doc.state == "failed", (doc.state, doc.stage)
    assert "timed out 3 times" in doc.error, doc.error
    print(f"hard limit inside MuPDF: {doc.error}")
    assert on_docs("tests.sleep", 0.1).get(timeout=30) == 0.1
    assert worker.process.pid == main_pid and worker.process.poll() is None
