"""Requests whose work is bounded, through the app in this process over the session's Redis: a
Parquet export written in row groups, and a thumbnail of a huge page."""
from __future__ import annotations

import time

from tests.helpers.pdfs import build_pdf
from tests.storeutil import doc_with_snippets


def test_parquet_export_is_written_in_bounded_row_groups(tmp_path, redis_url):
    import io

    import pyarrow.parquet as pq

    from app import create_app
    from docenrich.web.exports import ROW_GROUP

    app = create_app({"TESTING": True, "SECRET_KEY": "t", "DATA_DIR": str(tmp_path)})
    store = app.extensions["docenrich"].store
    doc = doc_with_snippets(store, 2 * ROW_GROUP + 123)
    response = app.test_client().get(f"/api/documents/{doc.id}/export?format=parquet")
    assert response.status_code == 200
    parquet = pq.ParquetFile(io.BytesIO(response.data))
    assert parquet.metadata.num_rows == 2 * ROW_GROUP + 123
    assert parquet.num_row_groups == 3
    assert max(parquet.metadata.row_group(i).num_rows for i in range(3)) == ROW_GROUP
    assert parquet.read().column("text").to_pylist()[-1] == f"snippet 0-{2 * ROW_GROUP + 122}"


def test_a_huge_page_gives_a_bounded_thumbnail(tmp_path, redis_url):
    from PIL import Image

    from app import create_app
    from docenrich.pdf import inspect_pdf

    # A strip 200 inches tall.
    data = build_pdf(lambda page: page.insert_text((5, 20), "top", fontsize=8), size=(40, 14400))
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "DATA_DIR": str(tmp_path)})
    doc, _ = app.extensions["docenrich"].store.add_document(data, "strip.pdf", inspect_pdf(data))
    started = time.perf_counter()
    response = app.test_client().get(f"/api/documents/{doc.id}/pages/1/thumbnail")
    assert response.status_code == 200
    width, height = Image.open(__import__("io").BytesIO(response.data)).size
    print(f"thumbnail {width}x{height} in {time.perf_counter() - started:.2f}s")
    assert width <= 240 and height <= 2000
