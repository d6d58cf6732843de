"""Faults with real processes: a worker killed mid-document, Redis killed and restarted,
time limits, a full or unwritable disk.

Every test here builds its own stack (tests/stack.py) so it can kill parts of it without
disturbing the session's worker.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for
from tests.stack import (
    Stack, assert_clean_json_error, assert_ingested_exactly_once, bomb_pdf, doubled_pdf,
    kill_mid_task, list_files, reference_snippets, snippet_rows, text_pdf, wait_in_flight,
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


# --------------------------------------------------------------------------- storage


@contextlib.contextmanager
def mounted(target: Path, *options: str):
    """`mount` for the duration of the block (the test is skipped where mounting is not allowed)."""
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a small or read-only filesystem")
    proc = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here: {proc.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill_disk(folder: Path) -> Path:
    """Write a file until the filesystem is full; returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            while True:
                try:
                    fh.write(bytes(size))
                except OSError:
                    break
    return filler


def web_client(data_dir: Path):
    """The real app (in this process) over its own DATA_DIR and the session's Redis."""
    from app import create_app

    app = create_app({"TESTING": True, "SECRET_KEY": "test", "DATA_DIR": str(data_dir), "API_TOKEN": ""})
    return app, app.test_client()


def flask_error(resp, *statuses: int) -> dict:
    assert resp.status_code in statuses, (resp.status_code, resp.data[:500])
    assert resp.is_json, resp.data[:300]
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and str(ROOT) not in text and "/tmp/" not in text, text
    return resp.get_json()


def upload_flask(client, data: bytes, name: str):
    import io

    return client.post("/api/documents", data={"file": [(io.BytesIO(data), name)]}, content_type="multipart/form-data")


def stored_state(data_dir: Path) -> tuple:
    """Rows and files of a DATA_DIR, to show that a failed upload changed nothing."""
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'docenrich.sqlite3'}?mode=ro", uri=True)) as conn:
        docs = conn.execute("SELECT id, sha256, state, size FROM documents ORDER BY id").fetchall()
    files = sorted(
        (str(p.relative_to(data_dir)), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in (data_dir / "pdfs").iterdir()
    )
    return docs, files


def test_upload_to_a_full_disk_is_refused_and_leaves_nothing(redis_server, tmp_path):
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=4m", "tmpfs") as disk:
        data_dir = disk / "data"
        app, client = web_client(data_dir)
        try:
            first = text_pdf(2, seed=50)
            assert upload_flask(client, first, "first.pdf").status_code == 202
            before = stored_state(data_dir)
            filler = fill_disk(disk)

            resp = upload_flask(client, text_pdf(3, seed=51), "second.pdf")
            body = flask_error(resp, 507)
            print(f"full disk: {resp.status_code} {body}")
            assert "disk is full" in body["error"], body
            assert stored_state(data_dir) == before, "no row and no file for the refused upload"
            assert not [p for p in list_files(data_dir) if p.name.endswith(".part")], "no partial file"
            assert before[1] == [(f"pdfs/{hashlib.sha256(first).hexdigest()}.pdf", hashlib.sha256(first).hexdigest())]
            listed = client.get("/api/documents").get_json()["documents"]
            assert [d["filename"] for d in listed] == ["first.pdf"]

            filler.unlink()  # space again: the same upload goes through, nothing to restart
            assert upload_flask(client, text_pdf(3, seed=51), "second.pdf").status_code == 202
        finally:
            app.extensions["docenrich"].store.close()


def test_upload_to_a_read_only_data_dir_is_refused_in_words(redis_server, tmp_path):
    data_dir = tmp_path / "data"
    app, client = web_client(data_dir)
    try:
        first = text_pdf(2, seed=52)
        assert upload_flask(client, first, "first.pdf").status_code == 202
        app.extensions["docenrich"].store.close()
        before = stored_state(data_dir)
        with mounted(data_dir, "--bind", str(data_dir)):
            # A disk that went read-only after an I/O error, as ext4 does with errors=remount-ro.
            proc = subprocess.run(["mount", "-o", "remount,bind,ro", str(data_dir)], capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")
            resp = upload_flask(client, text_pdf(3, seed=53), "second.pdf")
            body = flask_error(resp, 503, 507)
            print(f"read-only data dir: {resp.status_code} {body}")
            assert "not writable" in body["error"] or "read-only" in body["error"], body
            listed = client.get("/api/documents")
            assert listed.status_code == 200 and [d["filename"] for d in listed.get_json()["documents"]] == ["first.pdf"]
            app.extensions["docenrich"].store.close()
        assert stored_state(data_dir) == before
    finally:
        app.extensions["docenrich"].store.close()


def test_upload_when_pdfs_folder_became_a_file(redis_server, tmp_path):
    data_dir = tmp_path / "data"
    app, client = web_client(data_dir)
    try:
        first = text_pdf(2, seed=54)
        assert upload_flask(client, first, "first.pdf").status_code == 202
        before = stored_state(data_dir)
        (data_dir / "pdfs").rename(data_dir / "pdfs.aside")
        (data_dir / "pdfs").write_bytes(b"not a folder")
        resp = upload_flask(client, text_pdf(3, seed=55), "second.pdf")
        body = flask_error(resp, 503, 507)
        print(f"pdfs is a file: {resp.status_code} {body}")
        assert "folder" in body["error"], body
        (data_dir / "pdfs").unlink()
        (data_dir / "pdfs.aside").rename(data_dir / "pdfs")
        assert stored_state(data_dir) == before
        assert not [p for p in list_files(data_dir) if p.name.endswith(".part")]
    finally:
        app.extensions["docenrich"].store.close()
