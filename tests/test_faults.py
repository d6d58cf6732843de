"""Faults with real processes: a worker killed mid-document, Redis killed and restarted,
time limits, a full or unwritable disk.

Every test here builds its own stack (a password-protected Redis with append-only
persistence on a free port, its own DATA_DIR, worker and web subprocesses) so it can kill
parts of it without disturbing the session's worker. The helpers are shared with
test_load, test_hostile and test_trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import pymupdf
import pytest

from tests.conftest import ROOT, SESSION_DIR, TEST_ENV, WorkerProcess, wait_for

pytestmark = pytest.mark.slow

INGEST_TIMEOUT = 180
WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
    "upsilon phi chi psi omega river stone lantern copper meadow harbor violet signal marble orchard"
).split()


# --------------------------------------------------------------------------- helpers (shared)


def text_pdf(pages: int, seed: int = 0, sections: int = 4, words: int = 90) -> bytes:
    """A PDF of `pages` pages of distinct pseudo-random prose (seeded, so reproducible)."""
    rnd = random.Random(seed)
    doc = pymupdf.open()
    for number in range(pages):
        page = doc.new_page()
        text = "\n\n".join(
            f"Section {seed}.{number + 1}.{k}: " + " ".join(rnd.choice(WORDS) for _ in range(words))
            for k in range(sections)
        )
        page.insert_textbox(pymupdf.Rect(60, 60, 540, 780), text, fontsize=10)
    data = doc.tobytes()
    doc.close()
    return data


def doubled_pdf(pages_log2: int, text: str = "A page of text that repeats. ") -> bytes:
    """A PDF of 2**pages_log2 identical text pages, built in milliseconds by doubling."""
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_textbox(pymupdf.Rect(60, 60, 540, 780), text * 40, fontsize=10)
    for _ in range(pages_log2):
        with pymupdf.open(stream=doc.tobytes(), filetype="pdf") as copy:
            doc.insert_pdf(copy)
    data = doc.tobytes(garbage=1)
    doc.close()
    return data


def zeros_flate(megabytes: int) -> bytes:
    """A zlib stream that inflates to `megabytes` MiB of zero bytes, built without inflating it.

    After a full flush deflate forgets its history, so every further MiB of zeros compresses
    to the same bytes: one block repeated, then the Adler-32 of the whole.
    """
    chunk = bytes(1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(megabytes):
        adler = zlib.adler32(chunk, adler)
    return b"\x78\xda" + first + again * (megabytes - 1) + comp.flush() + adler.to_bytes(4, "big")


def bomb_pdf(kind: str, megabytes: int = 1024) -> bytes:
    """A one-page PDF with a FlateDecode stream of `megabytes` MiB of zeros (~1 MB on disk).

    kind "content": the zeros are a second content stream of the page (NUL is whitespace,
    so the page is valid and shows one line of text). kind "image": a 32768 x 32768 gray
    image XObject (1 GiB of pixels) drawn small on the page.
    """
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "Bomb page with one line of text.", fontsize=12)
    font = doc.xref_get_key(page.xref, "Resources/Font")[1]
    bomb = doc.get_new_xref()
    if kind == "content":
        doc.update_object(bomb, "<< >>")
        extra = bomb
    else:
        side = int((megabytes << 20) ** 0.5)
        doc.update_object(
            bomb, f"<< /Type /XObject /Subtype /Image /Width {side} /Height {side} /ColorSpace /DeviceGray "
                  "/BitsPerComponent 8 >>"
        )
        extra = doc.get_new_xref()
        doc.update_object(extra, "<< >>")
        doc.update_stream(extra, b"q 300 0 0 300 100 300 cm /Im0 Do Q")
        doc.xref_set_key(page.xref, "Resources", f"<< /Font {font} /XObject << /Im0 {bomb} 0 R >> >>")
    doc.update_stream(bomb, zeros_flate(megabytes), compress=False)
    doc.xref_set_key(bomb, "Filter", "/FlateDecode")
    contents = [*page.get_contents(), extra]
    doc.xref_set_key(page.xref, "Contents", "[" + " ".join(f"{x} 0 R" for x in contents) + "]")
    data = doc.tobytes()
    doc.close()
    return data


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http_request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 timeout: float = 60.0) -> Response:
    """One HTTP request to 127.0.0.1:port on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body with each file in a field named `file`."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        head = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/pdf\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_pdfs(port: int, files: list[tuple[str, bytes]], headers: dict | None = None, timeout: float = 60.0) -> Response:
    body, ctype = multipart(files)
    return http_request(port, "POST", "/api/documents", body, {"Content-Type": ctype, **(headers or {})}, timeout)


def assert_clean_json_error(resp: Response, *statuses: int) -> dict:
    """A JSON error of one of the statuses that leaks no stack trace and no server path."""
    assert resp.status in statuses, (resp.status, resp.body[:500])
    assert resp.headers.get_content_type() == "application/json", resp.body[:300]
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert "Traceback" not in resp.text and str(ROOT) not in resp.text and str(SESSION_DIR) not in resp.text
    assert "/tmp/" not in resp.text, resp.text
    return body


def list_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


class WebProcess:
    """`python app.py` on a free loopback port, as `make run` starts it; always torn down."""

    def __init__(self, name: str, env: dict[str, str]):
        from redis_server import free_port

        self.name = name
        self.port = free_port()
        self.log_path = SESSION_DIR / f"{name}.log"
        self.env = {
            **os.environ,
            **TEST_ENV,
            "API_TOKEN": "",
            "SECRET_KEY": "test-secret",
            **env,
            "WEB_HOST": "127.0.0.1",
            "WEB_PORT": str(self.port),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> WebProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def answers():
            if self.process.poll() is not None:
                raise AssertionError(f"app.py exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                return http_request(self.port, "GET", "/healthz", timeout=5)
            except OSError:
                return None

        try:
            wait_for(answers, timeout, 0.2, "the web app to answer")
        except BaseException:
            self.stop()
            raise
        return self

    def get(self, path: str, **kw) -> Response:
        return http_request(self.port, "GET", path, **kw)

    def upload(self, files: list[tuple[str, bytes]], **kw) -> Response:
        return post_pdfs(self.port, files, **kw)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Stack:
    """Its own Redis (password, append-only), DATA_DIR, workers and web apps; torn down by close()."""

    PASSWORD = "stack-password"

    def __init__(self, root: Path, **env: str):
        from celery_config import make_celery
        from redis_server import RedisServer, find_redis_server, free_port
        from settings import load_settings

        try:
            find_redis_server()
        except Exception as exc:
            pytest.skip(str(exc))
        self.root = root
        self.tag = uuid.uuid4().hex[:6]
        self.redis_dir = root / "redis"
        self.redis = RedisServer(self.redis_dir, port=free_port(), password=self.PASSWORD).start()
        self.data_dir = root / "data"
        self.env = {
            **{k: str(v) for k, v in env.items()},
            "REDIS_URL": self.redis.url,
            "DATA_DIR": str(self.data_dir),
        }
        self.app = make_celery(load_settings(env={**TEST_ENV, **self.env}))
        self.workers: list[WorkerProcess] = []
        self.webs: list[WebProcess] = []
        self._store = None

    def worker(self, name: str, role: str | None = None, args: list[str] | None = None, **env: str) -> WorkerProcess:
        """Start one worker and wait until it answers ping."""
        return self.workers_parallel((name, role, args, env))[0]

    def workers_parallel(self, *specs) -> list[WorkerProcess]:
        """Start several workers at once: specs are (name, role, args, env) tuples."""
        procs = []
        for name, role, args, env in specs:
            proc = WorkerProcess(
                f"{name}-{self.tag}",
                env={"MAX_TASKS_PER_CHILD": "1000", **self.env, **{k: str(v) for k, v in (env or {}).items()}},
                args=[*([f"--role={role}"] if role else []), *(args or [])],
            )
            self.workers.append(proc)
            procs.append(proc)
        errors = []

        def start(proc):
            try:
                proc.start(self.app)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(p,)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return procs

    def web(self, name: str = "web", **env: str) -> WebProcess:
        proc = WebProcess(f"{name}-{self.tag}", {**self.env, **{k: str(v) for k, v in env.items()}})
        self.webs.append(proc)
        return proc.start()

    def restart_redis(self) -> None:
        """Start Redis again on the same port and directory (after kill() or stop())."""
        from redis_server import RedisServer

        self.redis = RedisServer(self.redis_dir, port=self.redis.port, password=self.PASSWORD).start()

    @property
    def store(self):
        from store import Store

        if self._store is None:
            self._store = Store(self.data_dir)
        return self._store

    def add_document(self, data: bytes, name: str) -> str:
        """Store a PDF and queue it, as the upload API does."""
        from snippets import inspect_pdf

        doc, created = self.store.add_document(data, name, inspect_pdf(data))
        assert created
        self.app.send_task("docenrich.extract_document", args=[doc.id])
        return doc.id

    def wait_finished(self, doc_ids, timeout: float = INGEST_TIMEOUT) -> dict:
        """Wait until every document is ready or failed; returns {id: Document}."""
        pending = set(doc_ids)
        done = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for doc_id in list(pending):
                doc = self.store.get_document(doc_id)
                if doc is not None and doc.finished:
                    done[doc_id] = doc
                    pending.discard(doc_id)
            time.sleep(0.3)
        if pending:
            states = {d: (lambda x: (x.state, x.stage, x.batches_done, x.batches_total))(self.store.get_document(d))
                      for d in pending}
            logs = "\n\n".join(
                "\n".join(line[:200] for line in w.log_tail(400).splitlines() if line.startswith("["))[-6000:]
                for w in self.workers
            )
            raise AssertionError(f"not finished after {timeout:g}s: {states}\n{logs}")
        return done

    def close(self) -> None:
        for web in self.webs:
            web.stop()
        for worker in self.workers:
            worker.stop()
        if self._store is not None:
            self._store.close()
        with contextlib.suppress(Exception):
            self.app.close()
        self.redis.stop()


@pytest.fixture()
def make_stack(tmp_path):
    """make_stack(**env) -> a Stack under tmp_path; every one is closed at teardown."""
    stacks: list[Stack] = []

    def make(**env) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", **env)
        stacks.append(stack)
        return stack

    yield make
    for stack in reversed(stacks):
        stack.close()


def snippet_rows(data_dir: Path, doc_id: str) -> list[tuple]:
    """(ordinal, page, batch_index, text, vectors) of every stored snippet, read with plain SQL."""
    with contextlib.closing(sqlite3.connect(data_dir / "docenrich.sqlite3")) as conn:
        dup = conn.execute(
            "SELECT ordinal, count(*) FROM snippets WHERE document_id = ? GROUP BY ordinal HAVING count(*) > 1",
            (doc_id,),
        ).fetchall()
        assert dup == [], f"duplicate (document_id, ordinal): {dup}"
        return conn.execute(
            """SELECT s.ordinal, s.page, s.batch_index, s.text,
                      (SELECT count(*) FROM vectors v WHERE v.snippet_id = s.id)
               FROM snippets s WHERE s.document_id = ? ORDER BY s.ordinal""",
            (doc_id,),
        ).fetchall()


def reference_snippets(data: bytes, doc_id: str, batch_pages: int) -> list[tuple[int, int, str]]:
    """(ordinal, page, text) of a clean ingestion: the same per-batch calls the worker makes."""
    from settings import Settings
    from snippets import extract_snippets, page_count

    defaults = Settings()
    pages = page_count(data)
    out = []
    for start in range(1, pages + 1, batch_pages):
        found = extract_snippets(
            data, doc_id, start_page=start, end_page=min(pages, start + batch_pages - 1), batch_pages=batch_pages,
            target_tokens=defaults.snippet_target_tokens, overlap_tokens=defaults.snippet_overlap_tokens,
            image_max_px=defaults.snippet_image_max_px,
        )
        out.extend((s.ordinal, s.page, s.text) for s in found)
    return sorted(out)


def unacked_count(stack: Stack) -> int:
    import redis

    client = redis.Redis.from_url(stack.redis.url)
    try:
        return client.hlen("unacked")
    finally:
        client.close()


# --------------------------------------------------------------------------- worker killed


def unacked_tasks(client) -> dict[str, str]:
    """{delivery tag: task name} of the messages in Redis' unacked set (kombu's Redis transport)."""
    out = {}
    for tag, raw in client.hgetall("unacked").items():
        with contextlib.suppress(Exception):
            out[tag.decode()] = json.loads(raw)[0]["headers"]["task"]
    return out


def wait_in_flight(stack: Stack, doc_id: str, task: str | None = None, min_batches: int = 2) -> str:
    """Wait until a few batches are stored and a new message of `task` is unacked (running); its tag."""
    import redis

    client = redis.Redis.from_url(stack.redis.url)
    try:
        before = set(unacked_tasks(client))

        def moment():
            if stack.store.get_document(doc_id).batches_done < min_batches:
                return None
            return next((tag for tag, name in unacked_tasks(client).items()
                         if tag not in before and (task is None or name == task)), None)

        return wait_for(moment, INGEST_TIMEOUT, 0.005, f"{min_batches} stored batches and a {task or 'task'} in flight")
    finally:
        client.close()


def kill_mid_task(stack: Stack, worker: WorkerProcess, doc_id: str, task: str) -> list[str]:
    """SIGKILL the whole worker while it runs `task` for the document; returns the unacked task names."""
    import redis

    tag = wait_in_flight(stack, doc_id, task)
    worker.kill()  # parent and pool child at once, like the OOM killer or a power cut
    client = redis.Redis.from_url(stack.redis.url)
    try:
        left = unacked_tasks(client)
    finally:
        client.close()
    assert tag in left, f"the {task} finished before the kill (a slower one is needed); unacked: {left}"
    return sorted(left.values())


def assert_ingested_exactly_once(stack: Stack, doc_id: str, expected: list, batch_pages: int, batches: int):
    doc = stack.store.get_document(doc_id)
    assert doc.state == "ready", (doc.state, doc.error)
    rows = snippet_rows(stack.data_dir, doc_id)
    assert [(o, p, t) for o, p, _, t, _ in rows] == expected
    assert all(vectors == 1 for *_, vectors in rows), "every snippet has exactly one vector"
    assert doc.snippet_count == len(expected) and doc.batches_done == doc.batches_total == batches
    assert all(b == (p - 1) // batch_pages for _, p, b, _, _ in rows)
    return rows


def test_sigkilled_workers_mid_document_lose_and_duplicate_nothing(make_stack):
    """Whole-worker SIGKILL of the default (all queues) worker, then of a model worker.

    The killed worker's in-flight message stays in Redis' unacked set until the visibility
    timeout (~40 min); what must finish the document is the recovery a starting worker queues.
    """
    batch_pages, pages = 2, 24
    stack = make_stack(SNIPPET_BATCH_PAGES=batch_pages)
    # ~250 tokens a page: embedding a batch takes long enough to be caught in flight.
    first_pdf, second_pdf = text_pdf(pages, seed=21, sections=1, words=180), text_pdf(pages, seed=22, sections=1, words=180)

    # 1. The `make run` topology: one worker for every queue, killed mid-document.
    doc_a = stack.add_document(first_pdf, "first.pdf")
    expected_a = reference_snippets(first_pdf, doc_a, batch_pages)
    everything = stack.worker("all1")
    in_flight = kill_mid_task(stack, everything, doc_a, "docenrich.enrich_snippets")
    at_kill = stack.store.get_document(doc_a)
    print(f"all-queues worker killed at {at_kill.batches_done}/{at_kill.batches_total} batches; unacked: {in_flight}")
    assert at_kill.state != "ready" and in_flight

    # Restart as the scaled-out topology: a model worker and a document worker.
    models, docs = stack.workers_parallel(("models2", "models", None, None), ("docs2", "docs", None, None))
    stack.wait_finished([doc_a])
    assert "re-queued 1 unfinished documents" in docs.log_text()
    rows_a = assert_ingested_exactly_once(stack, doc_a, expected_a, batch_pages, pages // batch_pages)

    # Recovery is idempotent: again, plus a stray re-queue of the document, changes nothing.
    assert stack.app.send_task("docenrich.recover_documents").get(timeout=60) == []
    assert stack.app.send_task("docenrich.extract_document", args=[doc_a]).get(timeout=60)["queued"] == 0
    assert snippet_rows(stack.data_dir, doc_a) == rows_a

    # 2. The model worker dies mid-embedding (its message, with the link that stores the
    # batch, is stuck in the unacked set); a replacement model worker starts.
    doc_b = stack.add_document(second_pdf, "second.pdf")
    expected_b = reference_snippets(second_pdf, doc_b, batch_pages)
    in_flight = kill_mid_task(stack, models, doc_b, "docenrich.enrich_snippets")
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

    wait_in_flight(stack, ids[0], "docenrich.enrich_snippets", min_batches=1)
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

    stack = make_stack(TASK_SOFT_TIME_LIMIT=2, TASK_TIME_LIMIT=4, SNIPPET_BATCH_PAGES=4096)
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

    # An extraction that runs out of time fails its document with a reason in words.
    slow = stack.add_document(doubled_pdf(10), "thousand-pages.pdf")  # 1,024 pages in one batch
    doc = stack.wait_finished([slow], timeout=60)[slow]
    assert doc.state == "failed", (doc.state, doc.stage)
    assert "took longer than the time limit" in doc.error and "pages 1–1024" in doc.error, doc.error
    print(f"slow extraction: {doc.error}")

    # The same when the time goes inside MuPDF, where the soft limit cannot interrupt and
    # the hard limit kills the pool child: ~10 s of inflating a 1 GiB content stream.
    bomb = stack.add_document(bomb_pdf("content"), "bomb.pdf")
    doc = stack.wait_finished([bomb], timeout=60)[bomb]
    assert doc.state == "failed", (doc.state, doc.stage)
    assert "time limit" in doc.error, doc.error
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
