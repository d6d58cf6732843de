"""A worker whose embedder is BGE-M3 (the tiny test checkpoint) on a stack of its own: it stores
sparse weights beside the vectors, and search fuses them as a third list."""
from __future__ import annotations

import json
import sqlite3

import pytest

from tests.helpers.pdfs import build_pdf


@pytest.mark.slow
def test_bge_m3_worker_stores_sparse_and_search_fuses_three_lists(make_stack, bge_m3_checkpoint):
    stack = make_stack(EMBEDDER_MODEL=str(bge_m3_checkpoint))
    stack.worker("m3")
    pdf = build_pdf("The variable QZ_SPOOL_DIR names the spool folder of the print service.",
                    "Printing a page sends it to the queue; the queue is drained in order.", box=(72, 72, 520, 700))
    doc_id = stack.add_document(pdf, "spool.pdf")
    finished = stack.wait_finished([doc_id])[doc_id]
    assert finished.state == "ready", finished.error
    conn = sqlite3.connect(stack.data_dir / "docenrich.sqlite3")
    postings = conn.execute("SELECT count(DISTINCT snippet_id), count(*) FROM sparse_postings").fetchone()
    conn.close()
    assert postings[0] == 2 and postings[1] >= 2  # the seeded head keeps a few tokens of each
    web = stack.web()
    body = web.get("/api/search?q=QZ_SPOOL_DIR%20spool%20folder&rerank=0").json()
    assert body["mode"] == "hybrid" and "sparse" in body["timings_ms"], json.dumps(body)[:500]
    top = body["results"][0]
    assert top["page"] == 1 and {"dense", "lexical"} <= set(top["ranks"])
    assert any("sparse" in r["ranks"] for r in body["results"]), body["results"]
    dense_only = web.get("/api/search?q=QZ_SPOOL_DIR&rerank=0&mode=dense").json()
    assert "sparse" not in dense_only["timings_ms"]
