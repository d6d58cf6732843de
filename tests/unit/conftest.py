"""The unit tier: pure functions, SQLite stores in tmp dirs, generated PDFs. No Redis, no Celery
worker, no PostgreSQL, no web server, no browser, no model loaded: the whole tier runs in well
under a minute (`make test-fast`). The shared fixtures that start servers are refused here."""
from __future__ import annotations

import pytest


def _refuse(what: str):
    pytest.fail(f"{what} is not for unit tests: a test that needs it belongs in tests/integration or tests/system",
                pytrace=False)


@pytest.fixture(scope="session")
def redis_server():
    _refuse("a Redis server (and so the Celery app and worker)")


@pytest.fixture(scope="session")
def pg_server():
    _refuse("PostgreSQL")


@pytest.fixture(scope="session")
def bundled_model():
    _refuse("loading the bundled model")
