"""A search scoped to a small collection finds it, in every mode, on both backends, however many
pages of another collection say the same word; the filter is part of the answer."""
from __future__ import annotations

import urllib.parse

import pytest

from tests.helpers.pdfs import build_pdf, doubled_pdf
from tests.helpers.wait import wait_ready
from tests.stack import http_request, multipart

MODES = ("hybrid", "dense", "lexical")


def _upload(web, name: str, data: bytes, collection: str) -> str:
    body, ctype = multipart([(name, data)])
    resp = http_request(web.port, "POST", f"/api/documents?collection={collection}", body,
                        {"Content-Type": ctype}, 60.0)
    assert resp.status == 202, resp.text
    doc_id = resp.json()["documents"][0]["id"]
    doc = wait_ready(lambda: web.get(f"/api/documents/{doc_id}").json(), 300, f"document {name}")
    assert doc["state"] == "ready", doc
    return doc_id


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_small_collection_is_found_among_300_pages_that_say_the_same(backend, make_stack, request):
    env = {"DATABASE_URL": request.getfixturevalue("pg_url")} if backend == "postgres" else {}
    stack = make_stack(**env)
    stack.worker(f"scoped-{backend}")
    web = stack.web(f"scoped-web-{backend}")
    big = _upload(web, "big.pdf", doubled_pdf(8, "The quokka is a small marsupial. "), "big")  # 256 pages
    small = _upload(web, "small.pdf", build_pdf("Field notes: one quokka was seen near the lake.",
                                                "The second page is about the weather."), "small")
    for mode in MODES:
        for rerank in ("0", "1"):
            query = urllib.parse.urlencode({"q": "quokka", "collection": "small", "mode": mode, "rerank": rerank})
            found = web.get(f"/api/search?{query}").json()
            assert found["results"], (mode, rerank, found)
            assert {r["document_id"] for r in found["results"]} == {small}, (mode, rerank, found)
            assert found["filter"]["collections"] == ["small"] and found["collections"] == ["small"]
    # Unscoped, the big document fills the lexical top 5: a filter applied afterwards would find nothing.
    everywhere = web.get("/api/search?q=quokka&rerank=0&mode=lexical&k=5").json()
    assert {r["document_id"] for r in everywhere["results"]} == {big}, everywhere
    pages = web.get("/api/search?q=quokka&rerank=0&mode=lexical&pages=200-201&collection=big").json()
    assert sorted({r["page"] for r in pages["results"]}) == [200, 201], pages
    bad = web.get("/api/search?q=quokka&collection=" + ",".join(f"c{i}" for i in range(21)))
    assert bad.status == 400 and "At most 20" in bad.json()["error"]
