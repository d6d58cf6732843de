"""Cancel: a 1,024-page ingestion stopped midway leaves no worker on it within 3 s, and nothing of it
in the store or the index; a cancelled document can be uploaded again."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse

import pytest

from tests.helpers.env import ROOT, TEST_ENV
from tests.helpers.pdfs import doubled_pdf
from tests.helpers.wait import wait_for
from tests.stack import http_request

pytestmark = pytest.mark.slow


def busy_with(stack, doc_id: str) -> list[str]:
    """Names of the tasks any worker is running on this document now."""
    active = stack.app.control.inspect(timeout=1.0).active() or {}
    return [t["name"] for tasks in active.values() for t in tasks
            if doc_id in repr(t.get("args")) or doc_id in repr(t.get("kwargs"))]


def test_cancel_a_thousand_page_ingestion(make_stack):
    stack = make_stack()
    web = stack.web("cancel-web")
    stack.workers_parallel(("cancel-models", "models", None, {}), ("cancel-docs", "docs", None, {}))
    data = doubled_pdf(10, text="A lighthouse keeper counted the passing ships every night. ")
    response = web.upload([("thousand.pdf", data)])
    assert response.status == 202, response.text
    doc_id = response.json()["documents"][0]["id"]
    wait_for(lambda: stack.store.get_document(doc_id).batches_done >= 2, 180, 0.2, "two batches to be stored")
    assert stack.store.get_document(doc_id).snippet_count > 0
    assert 'id="cancel-document"' in web.get(f"/documents/{doc_id}").text, "the page offers a Cancel button"

    cancelled = http_request(web.port, "POST", f"/api/documents/{doc_id}/cancel")
    asked = time.monotonic()
    assert cancelled.status == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    wait_for(lambda: not busy_with(stack, doc_id), 3, 0.1, "every worker to leave the cancelled document")
    assert time.monotonic() - asked <= 3.5
    # A grace period for something that must not happen: a late step of the old run, had one
    # slipped through, would have stored by now (there is no event to wait for instead).
    time.sleep(2)
    doc = stack.store.get_document(doc_id)
    assert (doc.state, doc.snippet_count, doc.batches_done) == ("cancelled", 0, 0)
    assert stack.store.snippets(doc_id) == []
    for mode in ("lexical", "hybrid"):
        found = web.get("/api/search?" + urllib.parse.urlencode({"q": "lighthouse keeper ships", "mode": mode,
                                                                 "rerank": 0})).json()
        assert [h for h in found["results"] if h["document_id"] == doc_id] == [], mode
    assert http_request(web.port, "POST", f"/api/documents/{doc_id}/cancel").status == 409

    again = web.upload([("thousand.pdf", data)])
    assert again.status == 202 and again.json()["documents"][0]["duplicate"] is False, again.text
    wait_for(lambda: stack.store.get_document(doc_id).state in ("extracting", "embedding"), 60, 0.2,
             "the upload to start again")
    # The command line cancels too.
    command = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "docenrich", "cancel", doc_id],
                             cwd=ROOT, env={**os.environ, **TEST_ENV, **stack.env}, capture_output=True, text=True,
                             timeout=60)
    assert command.returncode == 0 and "cancelled" in command.stdout, command.stderr
    assert stack.store.get_document(doc_id).state == "cancelled"
