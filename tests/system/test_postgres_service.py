"""The whole service on one PostgreSQL: two gunicorn web servers, a docs worker and a model
worker, each its own process with nothing on a shared disk that the store needs."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

from tests.helpers.pdfs import pdf_with_text
from tests.helpers.wait import wait_for
from tests.stack import GUNICORN

pytestmark = pytest.mark.slow


def servers(stack, count: int = 2, **env) -> list:
    return [stack.web(f"pg-web-{i}", argv=GUNICORN, SECRET_KEY="pg", WEB_WORKERS=2, WEB_THREADS=2, **env)
            for i in range(count)]


def test_uploads_through_either_server_are_searchable_through_the_other(make_stack, pg_url, tmp_path,
                                                                     reranker_checkpoint):
    # Each process gets a DATA_DIR of its own: documents, images and vectors all live in PostgreSQL.
    stack = make_stack(DATABASE_URL=pg_url)
    stack.workers_parallel(("pg-docs", "docs", None, {"DATA_DIR": str(tmp_path / "docs-dir")}),
                           ("pg-models", "models", None, {"DATA_DIR": str(tmp_path / "models-dir")}))
    a, b = servers(stack, DATA_DIR=str(tmp_path / "web-dir"))
    marker = f"pg{uuid.uuid4().hex[:8]}"
    texts = {a: f"Beekeepers {marker} smoke the hive before lifting the frames of honey.",
             b: f"Cartographers {marker} survey the coastline with a theodolite at low tide."}
    ids = {}
    for server, text in texts.items():
        response = server.upload([(f"{marker}-{server.port}.pdf", pdf_with_text(text, text + " Again."))])
        assert response.status == 202, response.text
        ids[server] = response.json()["documents"][0]["id"]
    for doc_id in ids.values():
        wait_for(lambda d=doc_id: b.get(f"/api/documents/{d}").json()["state"] == "ready", 240, 0.5,
                 "the document to be ready")
    # Each document is found through the server that did not take it: lexical, dense and hybrid + rerank.
    for uploaded, other, query in ((a, b, "smoke the hive"), (b, a, "survey the coastline")):
        for mode in ("lexical", "dense", "hybrid"):
            body = other.get("/api/search?" + urlencode({"q": f"{marker} {query}", "mode": mode, "k": 3})).json()
            assert body["results"] and body["results"][0]["document_id"] == ids[uploaded], (mode, body)
        assert body["reranked"] is True and body["reranked_count"] >= 1, body["notes"]
    # Snippet images are drawn from the PDF in the database and served by either server.
    snippet = a.get(f"/api/documents/{ids[b]}/snippets").json()["snippets"][0]
    image = b.get(snippet["image_url"])
    assert image.status == 200 and len(image.body) > 100
    assert not any((tmp_path / d / "pdfs").exists() for d in ("docs-dir", "models-dir", "web-dir"))


def test_the_queue_cap_holds_across_servers_on_postgres(make_stack, pg_url):
    cap, sent = 3, 10
    stack = make_stack(DATABASE_URL=pg_url, MAX_QUEUED_DOCUMENTS=cap)
    both = servers(stack)
    pdfs = [(f"cap-{i}.pdf", pdf_with_text(f"Distinct document number {i} {uuid.uuid4().hex}")) for i in range(sent)]
    with ThreadPoolExecutor(sent) as pool:
        statuses = list(pool.map(lambda i: both[i % 2].upload([pdfs[i]]).status, range(sent)))
    assert sorted(statuses) == [202] * cap + [429] * (sent - cap), statuses
    assert stack.store.queued_count() == cap
