"""The integration tier: the session's Redis, PostgreSQL and single Celery worker, the models
loaded in this process, and the web app through Flask's test client. Nothing here starts a stack
of its own (that is tests/system)."""
from __future__ import annotations

import pytest

from tests.helpers.web import make_app


@pytest.fixture()
def clean_queues(celery_app):
    """Purge leftover messages so one test's backlog cannot slow the next."""
    celery_app.control.purge()
    yield
    celery_app.control.purge()


@pytest.fixture(scope="module")
def app(worker):
    """The real app over the session's data directory, with the session's worker behind it."""
    return make_app()
