"""Several gunicorn web processes behave as one service: two real gunicorn servers (each with
two worker processes) on two ports, over the session's Redis and one DATA_DIR, with the
session's Celery worker doing the document work."""
from __future__ import annotations

import os
import re
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

from tests.helpers.env import TEST_ENV
from tests.helpers.pdfs import pdf_with_text
from tests.helpers.wait import wait_for
from tests.stack import GUNICORN, WebProcess, http_request, multipart

pytestmark = pytest.mark.slow

# gunicorn's access log line names the worker process that answered: [..] <pid> 127.0.0.1 "GET ..." 200
SERVED_BY = re.compile(r'<(\d+)> 127\.0\.0\.1 "(\w+) ([^ ]+) HTTP/1\.1" (\d+)')


def gunicorn(name: str, **env: str) -> WebProcess:
    """A gunicorn server of two processes, as `make run` starts it, on a free port."""
    settings = {"DATA_DIR": TEST_ENV["DATA_DIR"], "WEB_WORKERS": "2", "WEB_THREADS": "2", **env}
    return WebProcess(f"{name}-{uuid.uuid4().hex[:6]}", settings, argv=GUNICORN).start()


@pytest.fixture()
def two_servers(worker):
    servers = [gunicorn("gunicorn-a", SECRET_KEY="shared-secret"), gunicorn("gunicorn-b", SECRET_KEY="shared-secret")]
    yield servers
    for server in servers:
        server.stop()


def scrape(server: WebProcess) -> str:
    response = server.get("/metrics")
    assert response.status == 200, response.text[:300]
    return response.text


def refusals(text: str, reason: str) -> float:
    found = re.search(rf'^docenrich_upload_refusals_total{{reason="{reason}"}} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_an_upload_through_one_server_is_visible_and_searchable_through_the_other(two_servers):
    a, b = two_servers
    marker = f"zq{uuid.uuid4().hex[:8]}"
    pdf = pdf_with_text(f"Glaciologists {marker} measured how fast the northern ice shelf retreats each summer.")
    response = a.upload([(f"ice-{marker}.pdf", pdf)])
    assert response.status == 202, response.text
    doc_id = response.json()["documents"][0]["id"]

    # Visible through the other server at once: the store is shared, not a process's memory.
    shown = b.get(f"/api/documents/{doc_id}")
    assert shown.status == 200 and shown.json()["filename"] == f"ice-{marker}.pdf", shown.text
    assert any(d["id"] == doc_id for d in b.get("/api/documents").json()["documents"])

    def ready():
        doc = b.get(f"/api/documents/{doc_id}").json()
        assert doc["state"] != "failed", doc
        return doc if doc["state"] == "ready" else None

    doc = wait_for(ready, 180, 0.5, "the document to be ready, seen through the other server")
    assert doc["snippet_count"] >= 1

    # Searchable through the other server: lexically, and by vector (its in-memory index loads
    # the vectors the worker stored after that server started).
    lexical = b.get("/api/search?" + urlencode({"q": marker, "mode": "lexical", "rerank": "0"})).json()
    assert [r["document_id"] for r in lexical["results"]][:1] == [doc_id], lexical
    dense = b.get("/api/search?" + urlencode({"q": "ice shelf retreat", "mode": "dense", "rerank": "0",
                                              "document": doc_id})).json()
    assert dense["results"] and all(r["document_id"] == doc_id for r in dense["results"]), dense

    # The same bytes through the other server are the same document, not a second one.
    again = b.upload([(f"ice-{marker}.pdf", pdf)])
    assert again.status == 202, again.text
    assert (again.json()["documents"][0]["id"], again.json()["documents"][0]["duplicate"]) == (doc_id, True)
    for server in (a, b):
        assert "development server" not in server.log_tail(400)


def test_metrics_count_what_every_server_saw(two_servers):
    a, b = two_servers
    before = refusals(scrape(b), "not_pdf")
    body, ctype = multipart([("notes.pdf", b"plain text, not a PDF")])
    for _ in range(3):
        assert http_request(a.port, "POST", "/api/documents", body, {"Content-Type": ctype}).status == 415
    # Every process of either server reports the refusals counted by the others.
    for _ in range(4):
        assert refusals(scrape(b), "not_pdf") - before == 3
        assert refusals(scrape(a), "not_pdf") - before == 3


def test_a_session_is_valid_in_every_worker_process_of_a_server_without_a_configured_secret(worker):
    """With no SECRET_KEY set, gunicorn's master gives all its workers one key, so a sign-in made
    by one process holds in the others."""
    server = gunicorn("gunicorn-secret", SECRET_KEY="", API_TOKEN="process-token")
    try:
        page = server.get("/login")
        cookie = page.headers["Set-Cookie"].split(";", 1)[0]
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        form = urlencode({"token": "process-token", "csrf_token": csrf}).encode()
        signed = http_request(server.port, "POST", "/login", form, {
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
        assert signed.status == 302, signed.text[:500]
        cookie = signed.headers["Set-Cookie"].split(";", 1)[0]

        def both_processes_answered():
            status = server.get("/api/documents", headers={"Cookie": cookie}).status
            assert status == 200, f"a worker process refused the session ({status}):\n{server.log_tail()}"
            pids = {pid for pid, _, path, code in SERVED_BY.findall(server.log_path.read_text())
                    if path == "/api/documents" and code == "200"}
            return len(pids) >= 2

        wait_for(both_processes_answered, 60, 0.05, "both worker processes to answer a signed-in request")
        assert "development server" not in server.log_path.read_text()
    finally:
        server.stop()


def test_sighup_to_the_master_replaces_the_workers_without_dropping_requests(redis_server):
    server = gunicorn("gunicorn-hup", SECRET_KEY="hup-secret")
    try:
        booted = lambda: re.findall(r"Booting worker with pid: (\d+)", server.log_path.read_text())  # noqa: E731
        wait_for(lambda: len(booted()) == 2, 30, 0.1, "two worker processes")
        old = set(booted())
        assert server.get("/api/documents").status == 200
        os.kill(server.process.pid, signal.SIGHUP)  # the master only: its workers die on a bare SIGHUP
        statuses = []

        def replaced():
            statuses.append(server.get("/api/documents").status)
            new = set(booted()) - old
            gone = all(not os.path.exists(f"/proc/{pid}") for pid in old)
            return len(new) == 2 and gone

        wait_for(replaced, 60, 0.1, "the old workers to be replaced by two new ones")
        assert set(statuses) == {200}, statuses
        assert server.process.poll() is None and "Hang up: Master" in server.log_path.read_text()
    finally:
        server.stop()


def test_the_queue_cap_holds_across_servers_taking_uploads_at_once(make_stack):
    """MAX_QUEUED_DOCUMENTS is decided by the store, not by a process: two servers of two
    processes each, sent distinct PDFs in parallel with no worker draining the queue, admit
    exactly the cap between them."""
    cap, sent = 3, 10
    stack = make_stack(MAX_QUEUED_DOCUMENTS=cap)
    servers = [stack.web(f"cap-{i}", argv=GUNICORN, SECRET_KEY="cap", WEB_WORKERS=2, WEB_THREADS=4) for i in range(2)]
    pdfs = [(f"cap-{i}.pdf", pdf_with_text(f"Distinct document number {i} {uuid.uuid4().hex}")) for i in range(sent)]
    with ThreadPoolExecutor(sent) as pool:
        statuses = list(pool.map(lambda i: servers[i % 2].upload([pdfs[i]]).status, range(sent)))
    assert sorted(statuses) == [202] * cap + [429] * (sent - cap), statuses
    assert stack.store.queued_count() == cap
