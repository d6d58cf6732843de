"""The web app in this process, through Flask's test client: uploads, waiting for documents and
errors that must leak nothing."""
from __future__ import annotations

import io
import os

from tests.helpers import wait
from tests.helpers.env import ROOT


def make_app(**config):
    """The real app over the session's DATA_DIR (where the session's worker writes) unless one is given."""
    from app import create_app

    return create_app({"TESTING": True, "SECRET_KEY": "test", "DATA_DIR": os.environ["DATA_DIR"], **config})


def post_files(client, *files: tuple[bytes, str], headers: dict | None = None):
    """POST /api/documents with each (content, filename) in a field named `file`."""
    data = {"file": [(io.BytesIO(content), name) for content, name in files]}
    return client.post("/api/documents", data=data, content_type="multipart/form-data", headers=headers or {})


def upload(client, content: bytes, name: str) -> dict:
    """Upload one PDF that must be accepted; the document as the API returned it."""
    response = post_files(client, (content, name))
    assert response.status_code == 202, response.get_json()
    return response.get_json()["documents"][0]


def _reader(client, doc_id: str):
    return lambda: client.get(f"/api/documents/{doc_id}").get_json()


def wait_finished(client, doc_id: str, timeout: float = wait.INGEST_TIMEOUT) -> dict:
    """Wait until the document is ready or failed."""
    return wait.wait_finished(_reader(client, doc_id), timeout, f"document {doc_id}")


def wait_ready(client, doc_id: str, timeout: float = wait.INGEST_TIMEOUT) -> dict:
    """Wait until the document is ready; its failure fails the test."""
    return wait.wait_ready(_reader(client, doc_id), timeout, f"document {doc_id}")


def assert_clean_error(response, *statuses: int) -> dict:
    """A JSON error of one of the statuses that leaks no stack trace and no server path."""
    assert response.status_code in statuses, (response.status_code, response.data[:500])
    assert response.is_json, response.data[:300]
    body = response.get_json()
    assert isinstance(body.get("error"), str) and body["error"], body
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and f"{ROOT.parent}/" not in text and "/tmp/" not in text, text
    assert os.environ["DATA_DIR"] not in text
    return body
