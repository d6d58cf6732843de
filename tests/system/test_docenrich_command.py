"""`docenrich web` and `docenrich worker --role all` as the service's processes: gunicorn serving
the app and a worker of the role, started through the one command line, ingest an upload."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers.env import ROOT, SESSION_DIR, TEST_ENV
from tests.helpers.pdfs import pdf_with_text
from tests.helpers.wait import wait_for

COMMAND = [sys.executable, "-m", "docenrich.cli.main"]


@pytest.mark.slow
def test_docenrich_web_and_worker_serve_and_ingest(make_stack):
    stack = make_stack()
    name = f"cmd-{stack.tag}@test"
    log_path = SESSION_DIR / f"cmd-{stack.tag}.log"
    env = {**os.environ, **TEST_ENV, **stack.env, "WORKER_LOG_FILE": str(log_path)}
    worker = subprocess.Popen([*COMMAND, "worker", "--role", "all", "--name", name], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answers():
            assert worker.poll() is None, log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            return any(name in reply for reply in stack.app.control.ping(destination=[name], timeout=0.5) or [])

        wait_for(answers, 120, 0.5, "the worker started by `docenrich worker` to answer ping")
        web = stack.web("cmd-web", argv=[*COMMAND, "web"])
        assert "Starting gunicorn" in web.log_path.read_text(errors="replace"), web.log_tail()
        response = web.upload([("command.pdf", pdf_with_text("Ferry timetables change with the seasons."))])
        assert response.status == 202, response.text
        doc_id = response.json()["documents"][0]["id"]
        assert stack.wait_finished([doc_id])[doc_id].state == "ready"
        assert "--queues=interactive,models,docs" in log_path.read_text(errors="replace")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
