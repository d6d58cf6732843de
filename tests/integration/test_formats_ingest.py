"""Every supported format through the API and the session's worker: each real sample ends ready with
page and bbox snippets, its phrase is found among the top 5 (lexical), its pages are drawn, and the
original comes back as uploaded. Hostile files are refused in words and the worker keeps working."""
from __future__ import annotations

import pytest

from docenrich import formats
from tests.helpers import formats as samples
from tests.helpers.pdfs import pdf_with_text
from tests.helpers.web import (
    assert_clean_error,
    post_files,
    upload,
    wait_finished,
    wait_ready,
)

pytestmark = pytest.mark.slow
KINDS = [s.kind for s in samples.SAMPLES
         if s.kind not in samples.OFFICE_KINDS or formats.soffice() is not None]


@pytest.fixture(scope="module")
def ingested(app):
    """Every sample, uploaded in a few requests and processed: kind -> the ready document."""
    client = app.test_client()
    docs = {}
    chosen = [samples.BY_KIND[k] for k in KINDS]
    for start in range(0, len(chosen), 6):
        part = chosen[start:start + 6]
        response = post_files(client, *((s.read(), s.name) for s in part))
        body = response.get_json()
        assert response.status_code == 202 and body["errors"] == [], body
        docs.update({s.kind: d for s, d in zip(part, body["documents"], strict=True)})
    return {kind: wait_ready(client, doc["id"], timeout=900) for kind, doc in docs.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_each_format_ends_ready_with_page_and_bbox_snippets(app, ingested, kind):
    client, doc = app.test_client(), ingested[kind]
    assert doc["pages"] >= 1 and doc["snippet_count"] >= 1, doc
    snippets = client.get(f"/api/documents/{doc['id']}/snippets?limit=1000").get_json()["snippets"]
    with_text = [s for s in snippets if s["text"].strip()]
    assert with_text, snippets[:3]
    assert all(1 <= s["page"] <= doc["pages"] and len(s["bbox"]) == 4 for s in with_text)
    first = with_text[0]
    image = client.get(first["image_url"])
    assert image.status_code == 200 and image.mimetype.startswith("image/")
    page = client.get(f"/api/documents/{doc['id']}/pages/{first['page']}/image")
    assert page.status_code == 200 and page.mimetype == "image/png"
    cited = client.get(f"/documents/{doc['id']}/pages/{first['page']}?snippet={first['id']}")
    assert cited.status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_each_format_is_found_by_its_phrase_in_the_top_5(app, ingested, kind):
    sample, doc = samples.BY_KIND[kind], ingested[kind]
    found = app.test_client().get("/api/search", query_string={"q": sample.phrase, "k": 5, "mode": "lexical",
                                                                "rerank": 0}).get_json()
    assert doc["id"] in [hit["document_id"] for hit in found["results"]], (sample.phrase, found["results"][:5])


@pytest.mark.parametrize("kind", ["docx", "html", "epub", "png"])
def test_the_original_comes_back_as_uploaded(app, ingested, kind):
    if kind not in ingested:
        pytest.skip("LibreOffice is not installed")
    sample, doc = samples.BY_KIND[kind], ingested[kind]
    response = app.test_client().get(f"/api/documents/{doc['id']}/original")
    assert response.status_code == 200 and response.data == sample.read()
    assert response.mimetype == formats.FORMATS[kind].media_type
    assert sample.name in response.headers["Content-Disposition"]
    page = app.test_client().get(f"/documents/{doc['id']}").get_data(as_text=True)
    assert f'id="download-original" href="/api/documents/{doc["id"]}/original"' in page


def test_the_same_file_twice_is_one_document(app, ingested):
    again = upload(app.test_client(), samples.BY_KIND["html"].read(), "renamed.html")
    assert again["id"] == ingested["html"]["id"] and again["duplicate"] is True


def test_hostile_files_are_refused_and_the_worker_keeps_working(app, ingested):
    client = app.test_client()
    for data, name, status, code in ((samples.zip_bomb_docx(), "bomb.docx", 413, "bomb"),
                                     (samples.epub_declaring_a_gigabyte(), "huge.epub", 413, "bomb"),
                                     (samples.huge_markdown(50), "huge.md", 413, "too_large"),
                                     (samples.encrypted_ooxml(), "locked.docx", 422, "encrypted"),
                                     (samples.encrypted_odt(), "locked.odt", 422, "encrypted")):
        body = assert_clean_error(post_files(client, (data, name)), status)
        assert body["code"] == code and name in body["error"], body
    deep = wait_finished(client, upload(client, samples.nested_html(100_000), "deep.html")["id"])
    assert deep["state"] == "ready", deep
    # Nothing stored was harmed, and the worker still processes a new document.
    assert client.get(f"/api/documents/{ingested['html']['id']}").get_json()["state"] == "ready"
    wait_ready(client, upload(client, pdf_with_text("After the hostile uploads, a plain page."), "after.pdf")["id"])
