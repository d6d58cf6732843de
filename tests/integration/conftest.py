"""The integration tier: the session's Redis, PostgreSQL and single Celery worker, the models
loaded in this process, and the web app through Flask's test client. Nothing here starts a stack
of its own (that is tests/system)."""
from __future__ import annotations

import pytest


@pytest.fixture()
def clean_queues(celery_app):
    """Purge leftover messages so one test's backlog cannot slow the next."""
    celery_app.control.purge()
    yield
    celery_app.control.purge()
