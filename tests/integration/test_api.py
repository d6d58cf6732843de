"""The web app and JSON API through Flask's test client, with a real Redis and worker. (The API
token and CSRF rule: test_api_auth.py; re-embedding and re-chunking: test_reembed.py.)"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

import pymupdf
import pytest

from tests.helpers.env import ROOT, TEST_ENV, corpus_file
from tests.helpers.pdfs import build_pdf, contents_pdf, pdf_with_text
from tests.helpers.wait import wait_for
from tests.helpers.web import assert_clean_error, make_app, post_files, upload, wait_ready

FOUR_PAGES = "004-pdflatex-4-pages/pdflatex-4-pages.pdf"
MULTICOLUMN = "026-latex-multicolumn/multicolumn.pdf"
PASSWORD = "005-libreoffice-writer-password/libreoffice-writer-password.pdf"
TABLE_PHRASE = "EU Countries Information"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def client(app):
    return app.test_client()


def page_of(path, phrase: str) -> int:
    """1-based page where the phrase occurs, found independently of the app."""
    with pymupdf.open(path) as doc:
        pages = [i + 1 for i, page in enumerate(doc) if phrase in page.get_text()]
    assert len(pages) == 1, f"{phrase!r} is on pages {pages}"
    return pages[0]


@pytest.fixture(scope="module")
def corpus_docs(app):
    """The two corpus PDFs, uploaded in one request and processed."""
    client = app.test_client()
    paths = {"four": corpus_file(FOUR_PAGES), "multi": corpus_file(MULTICOLUMN)}
    response = post_files(client, *((p.read_bytes(), p.name) for p in paths.values()))
    body = response.get_json()
    assert response.status_code == 202, body
    assert body["errors"] == [] and len(body["documents"]) == 2
    docs = {key: wait_ready(client, d["id"]) for key, d in zip(paths, body["documents"])}
    return {key: {**doc, "path": paths[key]} for key, doc in docs.items()}


# --------------------------------------------------------------------------- uploads


@pytest.mark.slow
def test_corpus_pdfs_become_ready_with_pages_and_snippets(client, corpus_docs):
    four, multi = corpus_docs["four"], corpus_docs["multi"]
    assert (four["pages"], multi["pages"]) == (4, 3)
    assert four["snippet_count"] > 0 and multi["snippet_count"] > 0
    assert four["progress"] == 1.0 and four["has_text_layer"] is True
    listed = {d["id"] for d in client.get("/api/documents").get_json()["documents"]}
    assert {four["id"], multi["id"]} <= listed


@pytest.mark.slow
def test_search_finds_a_phrase_on_its_page(client, corpus_docs):
    multi = corpus_docs["multi"]
    expected_page = page_of(multi["path"], TABLE_PHRASE)
    query = "EU Countries Information: population, area, capital and official language"
    body = client.get("/api/search", query_string={"q": query, "k": 5, "rerank": 0}).get_json()
    top = [(r["document_id"], r["page"]) for r in body["results"][:3]]
    assert (multi["id"], expected_page) in top, body["results"][:3]
    first = next(r for r in body["results"] if r["document_id"] == multi["id"])
    assert first["filename"] == "multicolumn.pdf" and len(first["bbox"]) == 4
    assert body["reranked"] is False and body["results"][0]["rerank_score"] is None
    assert body["mode"] == "hybrid"
    timings = body["timings_ms"]
    assert set(timings) == {"embed", "dense", "lexical", "lexical_wait", "fuse", "retrieve", "rerank", "total"}
    # The lexical search overlaps the embedding: retrieval counts only the wait for it.
    assert timings["retrieve"] == pytest.approx(timings["dense"] + timings["lexical_wait"] + timings["fuse"], abs=0.2)


@pytest.mark.slow
def test_search_reranks_and_filters_by_document(client, corpus_docs):
    four = corpus_docs["four"]
    body = client.get("/api/search", query_string={"q": "a blind text without meaning", "document": four["id"]}).get_json()
    assert body["reranked"] is True
    assert body["results"] and {r["document_id"] for r in body["results"]} == {four["id"]}
    scores = [r["rerank_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= r["rerank_normalized"] <= 1.0 for r in body["results"])
    assert body["embedder"] and body["timings_ms"]["total"] >= body["timings_ms"]["embed"]


@pytest.mark.slow
def test_same_pdf_twice_is_one_document(client, corpus_docs):
    path = corpus_docs["four"]["path"]
    again = upload(client, path.read_bytes(), "renamed-copy.pdf")
    assert again["id"] == corpus_docs["four"]["id"] and again["duplicate"] is True
    ids = [d["id"] for d in client.get("/api/documents").get_json()["documents"]]
    assert ids.count(again["id"]) == 1


def test_password_protected_pdf_is_refused_in_words(client):
    path = corpus_file(PASSWORD)
    body = assert_clean_error(post_files(client, (path.read_bytes(), path.name)), 422)
    assert "password" in body["error"].lower() and body["code"] == "encrypted"


def test_non_pdf_is_refused_as_unsupported(client):
    body = assert_clean_error(post_files(client, (PNG + b"\0" * 200, "x.pdf")), 415)
    assert "not a PDF" in body["error"] and body["code"] == "not_pdf"


def test_missing_file_is_a_400(client):
    body = assert_clean_error(client.post("/api/documents", data={}, content_type="multipart/form-data"), 400)
    assert "file" in body["error"]


def test_mixed_upload_accepts_the_good_and_reports_the_bad(client, worker):
    good = pdf_with_text(f"Mixed upload check {uuid.uuid4().hex}: the good file of the pair.")
    response = post_files(client, (good, "good.pdf"), (b"hello", "notes.pdf"))
    body = response.get_json()
    assert response.status_code == 202
    assert [d["filename"] for d in body["documents"]] == ["good.pdf"]
    assert body["errors"] == [
        {"filename": "notes.pdf", "error": body["errors"][0]["error"], "code": "not_pdf", "status": 415}
    ]
    wait_ready(client, body["documents"][0]["id"])


def test_size_and_page_limits_give_413(worker):
    client = make_app(MAX_UPLOAD_MB=1, MAX_PAGES=2).test_client()
    big = pdf_with_text("x") + b"%" + b"0" * (1024 * 1024)
    body = assert_clean_error(post_files(client, (big, "big.pdf")), 413)
    assert "1 MB" in body["error"]
    four = corpus_file(FOUR_PAGES)
    body = assert_clean_error(post_files(client, (four.read_bytes(), "four.pdf")), 413)
    assert body["code"] == "too_many_pages" and "pages" in body["error"]
    # Past MAX_CONTENT_LENGTH (derived from MAX_UPLOAD_MB), Flask refuses before reading the body.
    tiny = make_app(MAX_UPLOAD_MB=0)
    assert tiny.config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    body = assert_clean_error(post_files(tiny.test_client(), (big, "big.pdf")), 413)
    assert body["code"] == "request_entity_too_large"


def test_backpressure_answers_429_with_retry_after(worker):
    client = make_app(MAX_QUEUED_DOCUMENTS=0).test_client()
    response = post_files(client, (pdf_with_text("backpressure"), "b.pdf"))
    body = assert_clean_error(response, 429)
    assert response.headers["Retry-After"].isdigit() and body["code"] == "queue_full"


# --------------------------------------------------------------------------- documents


@pytest.mark.slow
def test_snippets_images_and_thumbnails(client, corpus_docs):
    doc = corpus_docs["multi"]
    listing = client.get(f"/api/documents/{doc['id']}/snippets", query_string={"limit": 2}).get_json()
    assert listing["total"] == doc["snippet_count"] and len(listing["snippets"]) == min(2, doc["snippet_count"])
    snippet = next(s for s in listing["snippets"] if s["image_url"])
    image = client.get(snippet["image_url"])
    assert image.status_code == 200 and image.mimetype.startswith("image/") and len(image.data) > 100
    # Once drawn, a snippet's image has a versioned URL that may be cached for good.
    listing = client.get(f"/api/documents/{doc['id']}/snippets", query_string={"limit": 2}).get_json()
    versioned = next(s for s in listing["snippets"] if s["id"] == snippet["id"])["image_url"]
    assert "v=" in versioned and "immutable" in client.get(versioned).headers["Cache-Control"]

    url = f"/api/documents/{doc['id']}/pages/2/thumbnail"
    thumb = client.get(url)
    assert thumb.status_code == 200 and thumb.mimetype == "image/png" and thumb.data.startswith(PNG)
    from docenrich.storage import SQLiteStore as Store

    assert Store(os.environ["DATA_DIR"]).thumb_path(doc["id"], 2).is_file()
    assert client.get(url).data == thumb.data
    assert_clean_error(client.get(f"/api/documents/{doc['id']}/pages/9/thumbnail"), 404)
    assert_clean_error(client.get("/api/snippets/999999999/image"), 404)


@pytest.mark.slow
def test_export_jsonl_and_parquet(client, corpus_docs):
    doc = corpus_docs["four"]
    response = client.get(f"/api/documents/{doc['id']}/export", query_string={"format": "jsonl"})
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert len(rows) == doc["snippet_count"]
    from docenrich.storage import SQLiteStore as Store

    dim = Store(os.environ["DATA_DIR"]).embedder_dims()[doc["embedder"]]
    assert dim == 384  # the bundled all-MiniLM-L6-v2
    for row in rows:
        assert {"text", "page", "bbox", "kind", "ordinal", "embedding", "embedder"} <= set(row)
        assert len(row["embedding"]) == dim and row["embedder"] == doc["embedder"]
    assert [r["ordinal"] for r in rows] == sorted(r["ordinal"] for r in rows)

    pq = pytest.importorskip("pyarrow.parquet")
    response = client.get(f"/api/documents/{doc['id']}/export", query_string={"format": "parquet"})
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.data))
    assert table.num_rows == len(rows) and len(table.column("embedding")[0]) == dim
    assert_clean_error(client.get(f"/api/documents/{doc['id']}/export?format=xml"), 400)


@pytest.mark.slow
def test_deleted_document_leaves_search(client):
    marker = uuid.uuid4().hex[:8]
    phrase = f"Lighthouse keepers on remote islands log the weather every hour. Logbook {marker}."
    doc = upload(client, pdf_with_text(phrase), f"lighthouse-{marker}.pdf")
    wait_ready(client, doc["id"])
    search = lambda: client.get("/api/search", query_string={"q": phrase, "k": 20, "rerank": 0}).get_json()  # noqa: E731
    assert doc["id"] in {r["document_id"] for r in search()["results"]}
    from docenrich.storage import SQLiteStore as Store

    pdf = Store(os.environ["DATA_DIR"]).pdf_path(doc["id"])
    response = client.delete(f"/api/documents/{doc['id']}")
    assert response.status_code == 200 and response.get_json() == {"deleted": doc["id"]}
    assert doc["id"] not in {r["document_id"] for r in search()["results"]}
    assert not pdf.exists()
    assert_clean_error(client.get(f"/api/documents/{doc['id']}"), 404)
    assert_clean_error(client.delete(f"/api/documents/{doc['id']}"), 404)
    assert_clean_error(client.get(f"/api/documents/{doc['id']}/snippets"), 404)


@pytest.mark.slow
def test_search_modes_hybrid_dense_lexical(client):
    marker = uuid.uuid4().hex[:6].upper()
    ident = f"QZX_{marker}_CACHE_LIMIT"
    pages = [
        "Caching keeps recently used pages in memory so that repeated reads are fast. The cache "
        "grows until it reaches its limit, then the least recently used pages are dropped.",
        f"The environment variable {ident} caps the size of the page cache in megabytes. "
        "Set it before the service starts; a change needs a restart.",
        "Logging writes one line per request with its duration and status code.",
    ]
    doc = upload(client, pdf_with_text(*pages), f"modes-{marker}.pdf")
    wait_ready(client, doc["id"])
    ask = lambda q, **kw: client.get("/api/search", query_string={"q": q, "k": 5, "rerank": 0,  # noqa: E731
                                                                  "document": doc["id"], **kw})
    lexical = ask(ident, mode="lexical").get_json()
    assert lexical["mode"] == "lexical" and lexical["embedder"] == ""
    assert lexical["results"][0]["page"] == 2 and ident in lexical["results"][0]["text"]
    assert lexical["results"][0]["ranks"] == {"lexical": 1}
    assert len(lexical["results"]) == 1  # only one snippet holds the identifier
    assert {"lexical", "fuse", "retrieve", "total"} <= set(lexical["timings_ms"]) and "embed" not in lexical["timings_ms"]
    dense = ask("how big may the cache grow", mode="dense").get_json()
    assert dense["mode"] == "dense" and dense["embedder"]
    assert {"embed", "dense", "retrieve"} <= set(dense["timings_ms"]) and "lexical" not in dense["timings_ms"]
    assert all(set(r["ranks"]) == {"dense"} for r in dense["results"]) and len(dense["results"]) == 3
    hybrid = ask(f"what does {ident} set").get_json()
    assert hybrid["mode"] == "hybrid"
    top = hybrid["results"][0]
    assert top["page"] == 2 and top["ranks"]["lexical"] == 1 and "dense" in top["ranks"]
    scores = [r["score"] for r in hybrid["results"]]
    assert scores == sorted(scores, reverse=True)
    assert_clean_error(ask(ident, mode="fuzzy"), 400)
    page = client.get("/search", query_string={"q": ident, "mode": "lexical", "rerank": 0})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<option value="lexical" selected>' in html and "word-match order" in html and ident in html


@pytest.mark.slow
def test_contents_pages_are_left_out_of_search_unless_included(client):
    marker = uuid.uuid4().hex[:6].upper()
    ident = f"QZ_{marker}_HOME"
    uploaded = upload(client, contents_pdf(ident, index=False), f"toc-{marker}.pdf")
    wait_ready(client, uploaded["id"])
    for mode in ("hybrid", "lexical", "dense"):
        q = {"q": f"Configuring {ident}", "rerank": 0, "document": uploaded["id"], "mode": mode}
        default = client.get("/api/search", query_string=q).get_json()["results"]
        assert default and {r["kind"] for r in default} == {"text"} and {r["page"] for r in default} == {2}, mode
        included = client.get("/api/search", query_string={**q, "include": "toc"}).get_json()["results"]
        assert {r["page"] for r in included} == {1, 2} and "toc" in {r["kind"] for r in included}, mode


# --------------------------------------------------------------------------- health, tasks, errors


def test_healthz_reports_redis_worker_and_models(client, worker):
    response = client.get("/healthz")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["redis"] == {"ok": True, "error": None}
    assert worker.hostname in body["workers"]
    models = body["models"][worker.hostname]["models"]
    assert models["embedder"]["configured"] == "bundled" and models["reranker"]["unavailable"] is None
    assert set(body["queues"]) == {"interactive", "models", "docs"}
    assert body["documents"]["queued"] >= 0 and body["status"] == "ok"


def test_task_status_shows_only_tasks_started_through_the_api(app, worker):
    from celery_worker import ping_task

    # A task someone else sent (here: straight to the worker) is not shown, whatever its id.
    result = ping_task.delay({"hello": "web"})
    result.get(timeout=60)
    mine = app.test_client()
    assert assert_clean_error(mine.get(f"/api/tasks/{result.id}"), 404)["code"] == "not_found"
    assert mine.get(f"/api/tasks/{uuid.uuid4()}").status_code == 404
    # The extraction an upload started is shown, by the id only the uploader was given.
    response = post_files(mine, (pdf_with_text(f"task status {uuid.uuid4()}"), "task.pdf"))
    assert response.status_code == 202, response.get_json()
    task_id = response.get_json()["documents"][0]["task_id"]
    body = wait_for(lambda: (b := mine.get(f"/api/tasks/{task_id}").get_json())["state"] == "SUCCESS" and b, 60, 0.3,
                    "the upload's extraction task to succeed")
    assert body["meta"]["document"] == response.get_json()["documents"][0]["id"]
    assert "Set-Cookie" not in response.headers  # API clients get no session, so no CSRF rule applies to them


def test_errors_are_json_without_internals(client):
    assert_clean_error(client.get("/api/nothing-here"), 404)
    assert_clean_error(client.put("/api/documents"), 405)
    assert_clean_error(client.get("/api/search"), 400)
    assert_clean_error(client.get("/api/search", query_string={"q": "x", "k": "many"}), 400)
    assert_clean_error(client.get("/api/search", query_string={"q": "x", "k": 100000}), 400)
    assert_clean_error(client.get("/api/documents/0123456789abcdef"), 404)
    assert_clean_error(client.get("/api/documents/../../etc/passwd/snippets"), 404)


def test_worker_queue_and_storage_failures_map_to_503_and_507(app, monkeypatch):
    from docenrich import client as worker_client
    from docenrich.storage import StorageError

    client = app.test_client()

    def no_worker(text, **_):
        raise worker_client.WorkerUnavailable("query embedding got no answer within 1s: no worker is online")

    monkeypatch.setattr(worker_client, "embed_query_sparse", no_worker)
    body = assert_clean_error(client.get("/api/search?q=anything"), 503)
    assert "no worker" in body["error"]

    services = app.extensions["docenrich"]
    monkeypatch.setattr(services, "queue_status", lambda: {"ok": False, "error": "refused", "models": {}})
    response = client.get("/api/search?q=anything")
    body = assert_clean_error(response, 503)
    assert response.headers["Retry-After"] == "5" and "Redis" in body["error"]
    page = client.get("/")
    assert page.status_code == 200 and b"Queue unreachable" in page.data

    def disk_full():
        raise StorageError(f"Could not save the upload to {os.environ['DATA_DIR']}/pdfs/x.pdf: the disk is full.")

    monkeypatch.setattr(services.store, "list_documents", disk_full)
    body = assert_clean_error(client.get("/api/documents"), 507)
    assert "disk is full" in body["error"]


def test_internal_errors_hide_the_traceback(app, monkeypatch):
    services = app.extensions["docenrich"]
    monkeypatch.setattr(services.store, "get_document", lambda _id: 1 / 0)
    body = assert_clean_error(app.test_client().get("/api/documents/0123456789abcdef"), 500)
    assert "ZeroDivision" not in body["error"]


# --------------------------------------------------------------------------- pages


@pytest.mark.slow
def test_pages_render_and_escape(client, corpus_docs):
    doc = corpus_docs["multi"]
    home = client.get("/")
    assert home.status_code == 200 and b'id="file-input"' in home.data
    assert "default-src 'self'" in home.headers["Content-Security-Policy"]
    view = client.get(f"/documents/{doc['id']}")
    assert view.status_code == 200 and b'loading="lazy"' in view.data and b'id="page-3"' in view.data
    page = client.get("/search", query_string={"q": "EU countries <b>capital</b>", "rerank": ["0"]})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'class="result"' in html
    assert "<mark>Countries</mark>" in html and "<b>capital</b>" not in html
    assert client.get("/documents/0123456789abcdef").status_code == 404


# --------------------------------------------------------------------------- process boundaries


@pytest.mark.slow
def test_web_process_never_imports_torch(worker, corpus_docs):
    # A fresh interpreter: this test process imported torch to build the reranker checkpoint.
    code = (
        "import sys\n"
        "from app import create_app\n"
        "app = create_app({'TESTING': True, 'SECRET_KEY': 'x'})\n"
        "r = app.test_client().get('/api/search?q=blind+text')\n"
        "assert r.status_code == 200 and r.get_json()['results'], r.get_json()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sentence_transformers', 'FlagEmbedding'))\n"
        "assert not heavy, heavy\n"
        "worker_side = sorted(m for m in sys.modules if m.startswith('docenrich.tasks') or m in\n"
        "                     ('celery_worker', 'model_manager', 'docenrich.models.manager', 'docenrich.models.registry'))\n"
        "assert not worker_side, worker_side\n"
        "print('ok')\n"
    )
    env = {**os.environ, **TEST_ENV}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


FALLBACK_STATUS = {
    "w@test": {"models": {
        "embedder": {"configured": "BAAI/bge-m3", "effective": "bundled:all-MiniLM-L6-v2", "fallback": True},
        "reranker": {"configured": "BAAI/bge-reranker-v2-m3", "unavailable": "no reranker available: offline"},
    }},
}


@pytest.mark.slow
def test_search_notes_for_missing_reranker_and_fallback_embedder(app, corpus_docs, monkeypatch):
    from docenrich import client as worker_client

    def no_reranker(query, passages, **_):
        raise worker_client.RerankerUnavailable("no reranker available: offline and not cached")

    monkeypatch.setattr(worker_client, "rerank", no_reranker)
    services = app.extensions["docenrich"]
    monkeypatch.setattr(services, "queue_status", lambda: {"ok": True, "error": None, "models": FALLBACK_STATUS})
    client = app.test_client()
    body = client.get("/api/search", query_string={"q": TABLE_PHRASE}).get_json()
    assert body["reranked"] is False and body["results"]
    assert any(n.startswith("Reranking unavailable: no reranker available") for n in body["notes"]), body["notes"]
    assert any(n.startswith("Offline fallback embedder in use") for n in body["notes"]), body["notes"]
    html = client.get("/search", query_string={"q": TABLE_PHRASE}).get_data(as_text=True)
    assert "Reranking unavailable: no reranker available" in html
    # The fallback banner shows on every page, not only with search results.
    home = client.get("/").get_data(as_text=True)
    assert "Offline fallback embedder in use: bundled:all-MiniLM-L6-v2 instead of BAAI/bge-m3" in home


def test_cited_page_lists_the_page_snippets_and_marks_the_cited_one(client, corpus_docs):
    four = corpus_docs["four"]
    snippets = client.get(f"/api/documents/{four['id']}/snippets?page=2").get_json()["snippets"]
    assert snippets and {s["page"] for s in snippets} == {2}
    cited = snippets[-1]
    assert cited["cited_url"] == f"/documents/{four['id']}/pages/2?snippet={cited['id']}"
    html = client.get(cited["cited_url"]).get_data(as_text=True)
    assert html.count('class="box') == sum(1 for s in snippets if s["bbox"])
    assert html.count("box-cited") == 1 and f'data-snippet="{cited["id"]}"' in html
    assert html.count('class="snippet cited-snippet') == len(snippets)
    assert f'/api/documents/{four["id"]}/pages/2/image?width=1200' in html
    assert client.get(f"/documents/{four['id']}/pages/99").status_code == 404
    results = client.get("/api/search?q=EU+Countries+Information&rerank=0").get_json()["results"]
    assert all(r["cited_url"].startswith(f"/documents/{r['document_id']}/pages/{r['page']}?snippet=") for r in results)


def test_large_page_images_are_bounded(client, corpus_docs):
    from PIL import Image

    from docenrich.pdf.render import MAX_RENDER_SIDE, guarded_zoom

    four = corpus_docs["four"]
    response = client.get(f"/api/documents/{four['id']}/pages/1/image?width=1549")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert Image.open(io.BytesIO(response.data)).width == 1500  # rounded to 100 px steps
    assert client.get(f"/api/documents/{four['id']}/pages/1/image?width=99999").status_code == 400
    assert client.get(f"/api/documents/{four['id']}/pages/9/image").status_code == 404
    # A strip of a page (10 pt wide, 14400 pt tall) asked at 2000 px stays within bounds.
    zoom = guarded_zoom(10, 14400, 2000)
    assert 14400 * zoom <= MAX_RENDER_SIDE and 10 * zoom * 14400 * zoom <= 12_000_000
    strip = build_pdf(lambda page: None, size=(10, 14400))
    from docenrich.pdf import render_page_thumbnail

    image = Image.open(io.BytesIO(render_page_thumbnail(strip, 1, width=2000)))
    assert max(image.size) <= MAX_RENDER_SIDE
