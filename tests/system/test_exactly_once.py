"""Exactly once under crashes and many workers: leases, generations, fixed batch geometry,
the store step's failure path, liveness, admission across processes, and a power cut.

Every test builds its own stack (tests/stack.py): a real Redis, real worker processes that
are killed or cut off, real web processes. (The store's compare-and-set rules alone are in
tests/unit/test_store_generations.py.)
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy

from tests.helpers.env import ROOT, TEST_ENV
from tests.helpers.pdfs import padded_pdf, text_pdf
from tests.helpers.wait import wait_for
from tests.stack import assert_ingested_exactly_once, http_request, post_pdfs, reference_snippets, snippet_rows

pytestmark = pytest.mark.slow

EXTRACTED = re.compile(r"Task docenrich\.extract_pages\[[^\]]+\] succeeded in [\d.e-]+s: "
                       r"\{'document': '(\w+)', 'batch': (\d+), 'snippets'")
EMBEDDED = re.compile(r"Task docenrich\.embed_batch\[[^\]]+\] succeeded in [\d.e-]+s: \{'vectors'")
# Celery's warning for a task that was running when the broker connection went away.
IN_FLIGHT = re.compile(r"Task docenrich\.(embed_batch|store_snippets)\[([^\]]+)\] cannot be acknowledged after a "
                       r"connection loss")


def executions(workers) -> tuple[Counter, int]:
    """(extractions per (document, batch), embeddings) that really ran, read from the workers' logs."""
    text = "\n".join(w.log_text() for w in workers)
    extracted = Counter((doc, int(batch)) for doc, batch in EXTRACTED.findall(text))
    return extracted, len(EMBEDDED.findall(text))


def restart_redis_gracefully(stack) -> None:
    """Stop Redis (it writes its append-only file) and start it again: every worker reconnects."""
    stack.redis.stop()
    stack.restart_redis()


# --------------------------------------------------------------------------- 1. recovery double work


def test_three_workers_reconnecting_during_a_backlog_run_each_batch_once(make_stack):
    batch_pages, pages = 2, 60
    stack = make_stack(SNIPPET_BATCH_PAGES=batch_pages)
    pdf = text_pdf(pages, seed=51, sections=1, words=180)
    workers = stack.workers_parallel(*[(f"w{i}", None, None, None) for i in range(3)])
    doc_id = stack.add_document(pdf, "backlog.pdf")
    expected = reference_snippets(pdf, doc_id, batch_pages)
    wait_for(lambda: stack.store.get_document(doc_id).batches_done >= 2, 120, 0.05, "two stored batches")
    at_restart = stack.store.get_document(doc_id).batches_done
    restart_redis_gracefully(stack)  # all three reconnect, and each one queues a recovery
    stack.wait_finished([doc_id], timeout=240)
    assert_ingested_exactly_once(stack, doc_id, expected, batch_pages, pages // batch_pages)
    extracted, embedded = executions(workers)
    print(f"Redis restarted at {at_restart}/30 batches; extractions {sum(extracted.values())}, embeddings {embedded}")
    assert sorted(extracted) == [(doc_id, b) for b in range(30)]
    assert set(extracted.values()) == {1}, {k: n for k, n in extracted.items() if n != 1}
    # The vectors travel in the embedding's result and the store step's message. A batch whose
    # step was running when Redis went away may be embedded again (its message was lost with the
    # connection), or its first embedding may have finished without logging success; no other
    # batch is, however many workers queue a recovery.
    in_flight = {task for w in workers for _, task in IN_FLIGHT.findall(w.log_text())}
    print(f"steps carrying vectors in flight at the restart: {len(in_flight)}")
    assert abs(embedded - 30) <= len(in_flight), (embedded, in_flight)


# --------------------------------------------------------------------------- 2. batch geometry


def test_workers_with_different_batch_sizes_follow_the_geometry_fixed_at_acceptance(make_stack):
    pages = 30
    stack = make_stack()
    pdf = text_pdf(pages, seed=52, sections=1, words=40)
    stack.workers_parallel(
        ("models", "models", None, None),
        ("docs2", "docs", None, {"SNIPPET_BATCH_PAGES": 2}),
        ("docs5", "docs", None, {"SNIPPET_BATCH_PAGES": 5}),
    )
    web = stack.web("web3", SNIPPET_BATCH_PAGES=3)
    response = web.upload([("geometry.pdf", pdf)])
    assert response.status == 202, response.text
    doc_id = response.json()["documents"][0]["id"]
    assert stack.store.get_document(doc_id).batch_pages == 3
    stack.wait_finished([doc_id])
    assert_ingested_exactly_once(stack, doc_id, reference_snippets(pdf, doc_id, 3), 3, 10)


# --------------------------------------------------------------------------- 3. store step failures


def test_store_step_retries_a_busy_database_and_fails_the_document_in_words_otherwise(make_stack):
    stack = make_stack(SNIPPET_BATCH_PAGES=4, TASK_MAX_RETRIES=8)
    docs = stack.worker("docs", "docs")
    pdf = text_pdf(4, seed=53, sections=1, words=40)
    doc_id = stack.add_document(pdf, "busy.pdf")
    wait_for(lambda: stack.store.get_document(doc_id).state == "extracting", 60, what="extraction")
    wait_for(lambda: stack.app.backend.client.keys("docenrich:staged:*"), 60, 0.1, "the staged batch")
    # Hold the database's write lock past the busy timeout while the model worker embeds.
    blocker = sqlite3.connect(stack.data_dir / "docenrich.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        stack.worker("models", "models")
        wait_for(lambda: "busy" in docs.log_text() and "retry" in docs.log_text().lower(), 60, 0.5,
                 "the store step to meet the busy database and retry")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    stack.wait_finished([doc_id], timeout=150)
    assert_ingested_exactly_once(stack, doc_id, reference_snippets(pdf, doc_id, 4), 4, 1)

    # A permanent failure: the database holds this embedder's vectors at another size.
    with contextlib.closing(sqlite3.connect(stack.data_dir / "docenrich.sqlite3")) as conn:
        conn.execute("UPDATE embedders SET dim = 7")
        conn.commit()
    second = stack.add_document(text_pdf(4, seed=54, sections=1, words=40), "mismatch.pdf")
    doc = stack.wait_finished([second], timeout=90)[second]
    assert doc.state == "failed", (doc.state, doc.stage)
    assert doc.error.startswith("storing pages 1–4 failed:") and "dimensional" in doc.error, doc.error
    assert stack.app.send_task("docenrich.recover_documents", ignore_result=False).get(timeout=60) == []
    assert stack.store.get_document(second).state == "failed"


# --------------------------------------------------------------------------- 4. state races


def test_tasks_of_an_old_run_do_nothing_after_a_reupload(make_stack):
    batch_pages, pages = 2, 12
    stack = make_stack(SNIPPET_BATCH_PAGES=batch_pages)
    pdf = text_pdf(pages, seed=56, sections=1, words=40)
    old_id = stack.add_document(pdf, "rerun.pdf")  # run 0 queued; no worker yet
    stack.app.send_task("docenrich.extract_pages", args=[old_id, 0, 0], queue="docs")
    stack.store.update_document(old_id, state="failed", stage="failed", error="stopped by hand")
    doc, created = stack.store.add_document(pdf, "rerun.pdf", batch_pages=batch_pages)
    assert created and doc.id == old_id and doc.generation == 1
    stack.app.send_task("docenrich.extract_document", args=[doc.id, 1])
    stack.app.send_task("docenrich.store_snippets", args=[None, doc.id, 0, 0], queue="docs")
    worker = stack.worker("rerun")
    stack.wait_finished([doc.id])
    assert_ingested_exactly_once(stack, doc.id, reference_snippets(pdf, doc.id, batch_pages), batch_pages, 6)
    extracted, _ = executions([worker])
    assert set(extracted.values()) == {1} and len(extracted) == 6, extracted
    assert worker.log_text().count("a task of run 0 arrived during run 1") >= 2


# --------------------------------------------------------------------------- 5. queue lengths


def test_healthz_counts_every_priority_level_of_each_queue(make_stack):
    import redis

    stack = make_stack()
    web = stack.web("queues")
    backlog = {0: 3, 3: 2, 6: 4, 9: 1}
    for priority, count in backlog.items():
        for _ in range(count):
            stack.app.send_task("tests.touch", args=["/nonexistent"], queue="docs", priority=priority)
    for _ in range(5):
        stack.app.send_task("tests.touch", args=["/nonexistent"], queue="models", priority=6)
    client = redis.Redis.from_url(stack.redis.url)
    assert client.llen("docs:6") == 4 and client.llen("docs") == 3  # really spread over sub-queues
    client.close()
    queues = web.get("/healthz").json()["queues"]
    assert queues == {"interactive": 0, "models": 5, "docs": 10}, queues


# --------------------------------------------------------------------------- 6. liveness


def test_a_killed_worker_is_gone_within_30_seconds_and_status_reads_scan_nothing(make_stack):
    import redis

    stack = make_stack()
    worker = stack.worker("alive", "models")
    web = stack.web("liveness")
    assert worker.hostname in web.get("/healthz").json()["models"]
    assert "No model worker" not in web.get("/").text
    client = redis.Redis.from_url(stack.redis.url)

    def scans() -> int:
        stats = client.info("commandstats")
        return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("scan", "keys"))

    before = scans()
    worker.kill()
    killed = time.monotonic()
    wait_for(lambda: "No model worker" in web.get("/").text, 40, 1.0, "the no-worker banner")
    gone_after = time.monotonic() - killed
    print(f"killed worker shown as gone after {gone_after:.1f}s")
    assert gone_after < 30
    assert web.get("/healthz").json()["models"] == {}
    assert scans() == before, "reading the workers' status must not scan the keyspace"
    client.close()


# --------------------------------------------------------------------------- 7. admission


def test_the_queue_cap_holds_across_web_processes(make_stack):
    stack = make_stack()
    webs = [stack.web(f"admit{i}", MAX_QUEUED_DOCUMENTS=3) for i in range(3)]
    uploads = 12
    pdfs = [padded_pdf(600 + i) for i in range(uploads)]
    statuses: list[int] = []
    barrier = threading.Barrier(uploads)

    def upload(i: int) -> None:
        barrier.wait()
        statuses.append(post_pdfs(webs[i % len(webs)].port, [(f"a{i}.pdf", pdfs[i])]).status)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(uploads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [202] * 3 + [429] * (uploads - 3), statuses
    assert stack.store.queued_count() == 3


# --------------------------------------------------------------------------- power loss


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = [int(p) for p in out]
    return found + [d for p in found for d in _descendants(p)]


class Service:
    """`python -m docenrich.cli.run`, as `make run` starts it, on its own ports and DATA_DIR."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env, self.process, self.runs = root, env, None, 0

    def start(self) -> None:
        self.runs += 1
        log = open(self.root / f"run{self.runs}.log", "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "docenrich.cli.run"], cwd=ROOT, env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        port = int(self.env["WEB_PORT"])

        def up():
            assert self.process.poll() is None, (self.root / f"run{self.runs}.log").read_text()[-3000:]
            with contextlib.suppress(OSError):
                return http_request(port, "GET", "/healthz", timeout=5).status == 200
            return False

        wait_for(up, 180, 0.5, "the service to answer with a worker online")

    def power_cut(self) -> int:
        """SIGKILL every process of the service at once: supervisor, Redis, worker (and its child), web."""
        pids = [self.process.pid, *_descendants(self.process.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        for pid in pids:
            wait_for(lambda p=pid: not Path(f"/proc/{p}").exists() or "Z" in _state(p), 10, 0.1, f"pid {pid} to die")
        return len(pids)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.power_cut()


def _state(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    return "Z"


def test_power_cut_mid_ingestion_then_make_run_again_finishes_exactly_once(tmp_path):
    from docenrich.cli.redis_server import find_redis_server, free_port
    from docenrich.storage import SQLiteStore

    try:
        find_redis_server()
    except Exception as exc:
        pytest.skip(str(exc))
    batch_pages, pages = 4, 120
    data_dir = tmp_path / "data"
    env = {**os.environ, **TEST_ENV, "REDIS_URL": "", "REDIS_PORT": str(free_port()), "REDIS_PASSWORD": "power-cut",
           "WEB_PORT": str(free_port()), "DATA_DIR": str(data_dir), "SECRET_KEY": "power-cut", "API_TOKEN": "",
           "WORKER_LOG_FILE": str(tmp_path / "worker.log"), "SNIPPET_BATCH_PAGES": str(batch_pages),
           "MAX_TASKS_PER_CHILD": "1000"}
    service = Service(tmp_path, env)
    pdf = text_pdf(pages, seed=57, sections=1, words=180)
    try:
        service.start()
        response = post_pdfs(int(env["WEB_PORT"]), [("long.pdf", pdf)])
        assert response.status == 202, response.text
        doc_id = response.json()["documents"][0]["id"]
        store = SQLiteStore(data_dir)
        wait_for(lambda: store.get_document(doc_id).batches_done >= 6, 240, 0.1, "20% of the batches")
        killed = service.power_cut()
        at_cut = store.get_document(doc_id)
        print(f"power cut at {at_cut.batches_done}/{at_cut.batches_total} batches ({killed} processes)")
        assert at_cut.state != "ready" and (data_dir / "docenrich.pid").exists()

        service.start()  # the stale pid file must not refuse it
        wait_for(lambda: store.get_document(doc_id).finished, 300, 0.5, "the document to finish")
        doc = store.get_document(doc_id)
        assert doc.state == "ready", (doc.state, doc.error)
        expected = reference_snippets(pdf, doc_id, batch_pages)
        rows = snippet_rows(data_dir, doc_id)  # asserts no (document, ordinal) twice
        assert [(o, p, t) for o, p, _, t, _ in rows] == expected
        assert all(vectors == 1 for *_, vectors in rows)
        assert doc.snippet_count == len(expected) and doc.batches_done == doc.batches_total == pages // batch_pages
        store.close()
        # The work it took: at most the batch the worker was extracting when the power went is redone.
        log_text = (tmp_path / "worker.log").read_text(errors="replace")
        extracted = Counter(int(b) for d, b in EXTRACTED.findall(log_text) if d == doc_id)
        print(f"extraction runs {sum(extracted.values())} for {pages // batch_pages} batches, "
              f"embeddings {len(EMBEDDED.findall(log_text))}")
        assert sorted(extracted) == list(range(pages // batch_pages))
        assert sum(extracted.values()) <= pages // batch_pages + 1, extracted
    finally:
        service.stop()


# --------------------------------------------------------------------------- 0. pid file


def test_a_stale_pid_file_never_blocks_a_start_and_a_second_start_is_refused(tmp_path, redis_url):
    from docenrich.cli.redis_server import free_port

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # After a power cut the old number may belong to any live process: here, this test's own.
    (data_dir / "docenrich.pid").write_text(str(os.getpid()))
    env = {**os.environ, **TEST_ENV, "REDIS_URL": redis_url, "DATA_DIR": str(data_dir), "SECRET_KEY": "pid",
           "WEB_PORT": str(free_port()), "WORKER_LOG_FILE": str(tmp_path / "worker.log")}
    argv = [sys.executable, "-m", "docenrich.cli.run", "--no-web"]
    first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        wait_for(lambda: (data_dir / "docenrich.pid").read_text().strip() == str(first.pid) or first.poll() is not None,
                 60, 0.2, "the first start to take the pid file")
        assert first.poll() is None, first.stdout.read().decode()
        second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "already running" in second.stderr + second.stdout, second
        assert str(first.pid) in second.stderr + second.stdout
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(60)
    assert not (data_dir / "docenrich.pid").exists()


# --------------------------------------------------------------------------- 9. smaller items


def test_the_worker_log_trims_result_reprs(make_stack):
    stack = make_stack()
    worker = stack.worker("repr", "models")
    result = stack.app.send_task("docenrich.get_sentence_embedding", args=[[f"text {i}" for i in range(40)]])
    result.get(timeout=60)
    marker = f"{result.id}] succeeded in "
    record = wait_for(lambda: marker in worker.log_text(), 10, what="the result line") and worker.log_text()
    # The whole log record: an array's repr spans several lines, up to the next record.
    record = record[record.index(marker):].split("\n[", 1)[0]
    shown = record.split("s: ", 1)[1]
    print(f"result shown as {len(shown)} characters: {shown[:80]!r}...")
    assert len(shown) <= 210, shown
