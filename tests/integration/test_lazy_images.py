"""Region images drawn after ingestion: on first view and by the docs worker's idle pass. (That
they match the eager path's is in tests/unit/test_region_images.py.)"""
from __future__ import annotations

import time

import pytest

from tests.helpers.pdfs import pdf_with_text
from tests.helpers.wait import wait_for
from tests.helpers.web import make_app, upload, wait_ready


@pytest.mark.slow
def test_ingested_snippets_get_images_on_first_view_and_from_the_idle_pass(worker):
    app = make_app()
    client = app.test_client()
    text = f"Lazy images {time.time_ns()}: the keeper rows out to the lighthouse at dusk."
    doc = wait_ready(client, upload(client, pdf_with_text(text, text + " Second page."), "lazy.pdf")["id"])
    listing = client.get(f"/api/documents/{doc['id']}/snippets").get_json()["snippets"]
    assert listing and all(s["image_url"] for s in listing)
    first = client.get(listing[0]["image_url"])
    assert first.status_code == 200 and first.mimetype.startswith("image/") and len(first.data) > 100
    # Drawn now and stored: the listing gives its versioned, immutable URL, with the same bytes.
    again = client.get(f"/api/documents/{doc['id']}/snippets").get_json()["snippets"][0]
    assert "v=" in again["image_url"]
    cached = client.get(again["image_url"])
    assert cached.data == first.data and "immutable" in cached.headers["Cache-Control"]
    store = app.extensions["docenrich"].store
    wait_for(lambda: not store.snippets_without_image(doc["id"]), 60, 0.5, "the idle pass to draw every image")
    assert all(s.image_path for s in store.snippets(doc["id"]))
    assert "docenrich.render_images" in worker.log_text()
