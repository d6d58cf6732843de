"""The whole service on PostgreSQL: a web process and a worker with separate data directories
(as on two hosts) sharing only Redis and the database; an upload is extracted, embedded, searched,
drawn and deleted without a file on either side."""
from __future__ import annotations

from docenrich.storage.postgres import PostgresStore
from tests.helpers.env import corpus_file
from tests.helpers.wait import wait_ready
from tests.stack import http_request

FOUR_PAGES = "004-pdflatex-4-pages/pdflatex-4-pages.pdf"


def test_upload_search_draw_and_delete_across_hosts(make_stack, pg_url, reranker_checkpoint, tmp_path):
    stack = make_stack(DATABASE_URL=pg_url)
    stack.worker("pg-worker", DATA_DIR=str(tmp_path / "worker-host"))
    web = stack.web("pg-web", DATA_DIR=str(tmp_path / "web-host"))
    data = corpus_file(FOUR_PAGES).read_bytes()
    response = web.upload([("four.pdf", data)])
    assert response.status == 202, response.text
    doc_id = response.json()["documents"][0]["id"]
    doc = wait_ready(lambda: web.get(f"/api/documents/{doc_id}").json(), 180, f"document {doc_id}")
    assert doc["pages"] == 4 and doc["snippet_count"] > 4 and doc["embedder"]

    for mode in ("hybrid", "dense", "lexical"):
        found = web.get(f"/api/search?q=letters+of+the+alphabet&k=3&rerank=0&mode={mode}").json()
        assert found["results"] and found["results"][0]["document_id"] == doc["id"], (mode, found)
    thumb = web.get(f"/api/documents/{doc['id']}/pages/2/thumbnail")
    assert thumb.status == 200 and thumb.body[:4] == b"\x89PNG"

    st = PostgresStore(pg_url)
    try:
        assert st.pdf_bytes(doc["id"]) == data and st.thumb_bytes(doc["id"], 2) == thumb.body
        assert sum(st.embedder_counts().values()) == doc["snippet_count"]
        # Neither host wrote a database, a PDF or a rendering to its own disk.
        for host in ("worker-host", "web-host"):
            written = [p for p in (tmp_path / host).rglob("*") if p.is_file()]
            assert not written, written
        deleted = stack_delete(web, doc["id"])
        assert deleted == 200 and st.list_documents() == [] and st.embedder_counts() == {}
    finally:
        st.close()


def stack_delete(web, doc_id: str) -> int:
    return http_request(web.port, "DELETE", f"/api/documents/{doc_id}").status
