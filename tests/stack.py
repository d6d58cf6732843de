"""Helpers for tests that build their own stack: a password-protected Redis with append-only
persistence on a free port, its own DATA_DIR, worker and web subprocesses, so a test can kill
parts of it without disturbing the session's worker; and HTTP requests to those web processes.
The PDF builders live in tests/helpers/pdfs.py (the ones imported here are re-exported).
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.env import ROOT, SESSION_DIR, TEST_ENV
from tests.helpers.pdfs import (  # noqa: F401  (re-exported: tests import them from here)
    bomb_pdf,
    doubled_pdf,
    table_pdf,
    text_pdf,
    zeros_flate,
)
from tests.helpers.wait import wait_for
from tests.helpers.workers import WorkerProcess

INGEST_TIMEOUT = 180
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:docenrich.cli.gunicorn_conf", "docenrich.web.wsgi:app"]


# --------------------------------------------------------------------------- HTTP


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
    """`python app.py` (or another server command, e.g. gunicorn) on a free loopback port; always torn down."""

    def __init__(self, name: str, env: dict[str, str], argv: list[str] | None = None):
        from docenrich.cli.redis_server import free_port

        self.name = name
        self.argv = argv or [sys.executable, str(ROOT / "app.py")]
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
                self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def answers():
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        from docenrich.cli.redis_server import RedisServer, find_redis_server, free_port
        from docenrich.config import load_settings

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

    def web(self, name: str = "web", argv: list[str] | None = None, **env: str) -> WebProcess:
        """Start a web server (`python app.py`, or argv) on this stack and wait until it answers."""
        proc = WebProcess(f"{name}-{self.tag}", {**self.env, **{k: str(v) for k, v in env.items()}}, argv)
        self.webs.append(proc)
        return proc.start()

    def restart_redis(self) -> None:
        """Start Redis again on the same port and directory (after kill() or stop())."""
        from docenrich.cli.redis_server import RedisServer

        self.redis = RedisServer(self.redis_dir, port=self.redis.port, password=self.PASSWORD).start()

    @property
    def store(self):
        from docenrich.storage import SQLiteStore, open_store

        if self._store is None:
            url = self.env.get("DATABASE_URL")
            self._store = open_store(database_url=url, data_dir=self.data_dir) if url else SQLiteStore(self.data_dir)
        return self._store

    def add_document(self, data: bytes, name: str) -> str:
        """Store a PDF and queue it, as the upload API does."""
        from docenrich.pdf import inspect_pdf

        batch_pages = self.env.get("SNIPPET_BATCH_PAGES")
        doc, created = self.store.add_document(
            data, name, inspect_pdf(data), batch_pages=int(batch_pages) if batch_pages else None
        )
        assert created
        self.app.send_task("docenrich.extract_document", args=[doc.id, doc.generation])
        return doc.id

    def wait_finished(self, doc_ids, timeout: float = INGEST_TIMEOUT) -> dict:
        """Wait until every document is ready or failed; returns {id: Document}."""
        pending = set(doc_ids)
        done = {}

        def all_finished():
            for doc_id in list(pending):
                doc = self.store.get_document(doc_id)
                if doc is not None and doc.finished:
                    done[doc_id] = doc
                    pending.discard(doc_id)
            return not pending

        try:
            wait_for(all_finished, timeout, 0.3, "the documents to finish")
        except TimeoutError:
            raise AssertionError(f"not finished after {timeout:g}s: {self._stuck_report(pending)}") from None
        return done

    def _stuck_report(self, pending: set[str]) -> str:
        """The unfinished documents' states, the leases, queues and heartbeats in Redis, and the workers' logs."""
        import redis

        states = {d: (lambda x: (x.state, x.stage, x.batches_done, x.batches_total))(self.store.get_document(d))
                  for d in pending}
        logs = "\n\n".join(
            "\n".join(line[:200] for line in w.log_tail(400).splitlines() if line.startswith("["))[-6000:]
            for w in self.workers
        )
        client = redis.Redis.from_url(self.redis.url)
        try:
            seen = {k: client.get(k) for k in client.keys("docenrich:lease:*")}
            seen["staged"] = client.keys("docenrich:staged:*")
            seen["unacked"] = unacked_tasks(client)
            seen["idx"] = client.zrange("unacked_index", 0, -1, withscores=True)
            seen["hb"] = client.zrange("docenrich:heartbeats", 0, -1, withscores=True)
            seen["now"] = time.time()
        finally:
            client.close()
        return f"{states}\nin Redis: {seen}\n{logs}"

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
    from docenrich.config import Settings, load_settings
    from docenrich.models.tokens import embedder_counter
    from docenrich.pdf import extract_snippets, page_count

    defaults = Settings()
    # The workers size snippets with their embedder's tokenizer: so does the reference.
    counter = embedder_counter(load_settings(env=dict(TEST_ENV)))
    pages = page_count(data)
    out = []
    for start in range(1, pages + 1, batch_pages):
        found = extract_snippets(
            data, doc_id, start_page=start, end_page=min(pages, start + batch_pages - 1), batch_pages=batch_pages,
            target_tokens=defaults.snippet_target_tokens, overlap_tokens=defaults.snippet_overlap_tokens,
            image_max_px=defaults.snippet_image_max_px, count_tokens=counter,
            max_tokens=counter.max_tokens if counter else None,
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
