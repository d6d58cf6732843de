"""`make run` (`python -m docenrich.cli.run`): gunicorn for the web app, a models worker and a docs
worker that together consume every queue, and Ctrl-C stopping web, workers, then Redis."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers.env import ROOT, TEST_ENV
from tests.helpers.pdfs import pdf_with_text
from tests.helpers.wait import wait_for
from tests.helpers.workers import processes_with
from tests.stack import http_request, post_pdfs


@pytest.mark.slow
def test_make_run_serves_with_gunicorn_splits_the_workers_and_stops_in_order(tmp_path, reranker_checkpoint):
    from docenrich.cli.redis_server import find_redis_server, free_port

    try:
        find_redis_server()
    except Exception as exc:
        pytest.skip(str(exc))
    data_dir = tmp_path / f"data-{uuid.uuid4().hex}"
    port = free_port()
    proc, out_path = start_run(tmp_path, data_dir, port, free_port(), "run")
    try:
        health = wait_serving(proc, out_path, port)
        assert {w.split("@")[0] for w in health["workers"]} == {"models", "docs"}, health
        response = post_pdfs(port, [("run.pdf", pdf_with_text("Lighthouse keepers logged every passing ship."))])
        assert response.status == 202, response.text
        doc_id = response.json()["documents"][0]["id"]
        wait_for(lambda: http_request(port, "GET", f"/api/documents/{doc_id}").json()["state"] == "ready", 180, 0.5,
                 "the upload to be extracted by the docs worker and embedded by the models worker")
        # gunicorn's processes run with the bounded allocator; the workers (torch) with glibc's defaults.
        service = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in processes_with(str(data_dir))}
        webs = [pid for pid, cmd in service.items() if b"gunicorn" in cmd]
        workers = [pid for pid, cmd in service.items() if b"celery" in cmd or b"worker" in cmd]
        assert len(webs) == 3 and workers, service
        for pid in webs + workers:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            bounded = b"MALLOC_ARENA_MAX=2" in environ and b"MALLOC_MMAP_THRESHOLD_=131072" in environ
            assert bounded == (pid in webs), (pid, service[pid])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in processes_with(str(data_dir)):
            os.kill(pid, signal.SIGKILL)
    text = out_path.read_text()
    assert "development server" not in text and "Starting gunicorn" in text, text[-3000:]
    assert "Worker models@" in text and "(role models, concurrency 1)" in text
    assert "Worker docs@" in text and "(role docs, concurrency 1)" in text
    stops = [line for line in text.splitlines() if line.startswith("Stopping ")]
    assert [line.split(" (")[0] for line in stops] == [
        "Stopping web", "Stopping docs worker", "Stopping models worker", "Stopping redis"], stops
    assert processes_with(str(data_dir)) == [], "make run left processes behind"


def start_run(tmp_path, data_dir, port: int, redis_port: int, name: str) -> tuple[subprocess.Popen, object]:
    """`python -m docenrich.cli.run` on its own ports and DATA_DIR; returns the process and its output path."""
    env = {**os.environ, **TEST_ENV, "REDIS_URL": "", "REDIS_PORT": str(redis_port), "REDIS_PASSWORD": "run-test",
           "WEB_PORT": str(port), "DATA_DIR": str(data_dir), "SECRET_KEY": "run-test", "API_TOKEN": "",
           "WORKER_LOG_FILE": str(tmp_path / "worker.log"), "DOCS_CONCURRENCY": "1", "WEB_WORKERS": "2"}
    out_path = tmp_path / f"{name}.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "docenrich.cli.run"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, out_path


def wait_serving(proc: subprocess.Popen, out_path, port: int) -> dict:
    def healthy():
        assert proc.poll() is None, out_path.read_text()[-3000:]
        try:
            body = http_request(port, "GET", "/healthz", timeout=5).json()
        except (OSError, ValueError):
            return None
        return body if len(body.get("workers", [])) == 2 else None

    return wait_for(healthy, 180, 0.5, "the web app to see both workers")


def test_killing_make_run_alone_leaves_no_process_and_the_next_run_serves(tmp_path, reranker_checkpoint):
    from docenrich.cli.redis_server import free_port

    data_dir = tmp_path / f"data-{uuid.uuid4().hex}"
    port, redis_port = free_port(), free_port()
    proc, out_path = start_run(tmp_path, data_dir, port, redis_port, "first")
    second = None
    try:
        wait_serving(proc, out_path, port)
        children = processes_with(str(data_dir))
        assert len(children) >= 5, children  # run, Redis, two workers with their pool children, gunicorn
        os.kill(proc.pid, signal.SIGKILL)  # as the OOM killer would: the supervisor alone
        proc.wait()
        try:
            wait_for(lambda: processes_with(str(data_dir)) == [], 10, 0.2, "every process of the service to exit")
        except TimeoutError:
            left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in processes_with(str(data_dir))}
            raise AssertionError(f"left running: {left}") from None
        second, out2 = start_run(tmp_path, data_dir, port, redis_port, "second")
        wait_serving(second, out2, port)
        second.send_signal(signal.SIGINT)
        assert second.wait(120) == 0
    finally:
        for p in (proc, second):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for pid in processes_with(str(data_dir)):
            os.kill(pid, signal.SIGKILL)
