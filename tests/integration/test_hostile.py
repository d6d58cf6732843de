"""Hostile input through the real API and the real worker: junk files, a broken page tree,
markup in PDFs, hostile filenames. (Decompression bombs are in tests/system/test_bombs.py, the
fuzzing of the PDF entry points in tests/unit/test_pdf_hostile.py.)

Every input is generated here. Uploads go through the app (`create_app`, Flask's client)
over the session's Redis and worker.
"""
from __future__ import annotations

import io
import random
import time
import uuid
import zipfile
from pathlib import Path

import pymupdf
import pytest
from werkzeug.http import parse_options_header

from tests.helpers.pdfs import broken_page_tree_pdf, build_pdf, doubled_pdf, text_pdf
from tests.helpers.web import assert_clean_error, make_app, wait_finished
from tests.stack import list_files, multipart

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- inputs


def png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("inside.pdf", text_pdf(1, seed=5))
    return buf.getvalue()


def over_the_page_limit() -> bytes:
    """10,001 pages (one over the default MAX_PAGES) in seconds: double a page to 8,192, add 1,809 more."""
    data = doubled_pdf(13, "Page of a very long document. ")
    with pymupdf.open(stream=data, filetype="pdf") as doc, pymupdf.open(stream=data, filetype="pdf") as src:
        doc.insert_pdf(src, from_page=0, to_page=1808)
        assert doc.page_count == 10001
        return doc.tobytes(garbage=1)


MARKUP = '<script>alert("pwned")</script> <img src=x onerror=alert(2)> & "quotes" <b>bold</b>'


def markup_pdf() -> bytes:
    return build_pdf(f"Markup test {uuid.uuid4().hex}. {MARKUP}", box=(60, 60, 540, 400),
                     metadata={"title": '<script>alert("title")</script>', "author": "<i>x</i>"})


# --------------------------------------------------------------------------- API helpers


def make_client(data_dir: str | None = None, **config):
    app = make_app(API_TOKEN="", **({"DATA_DIR": data_dir} if data_dir else {}), **config)
    return app, app.test_client()


def json_error(resp, status: int, code: str | None = None) -> dict:
    body = assert_clean_error(resp, status)
    if code:
        assert body["code"] == code, body
    return body


def raw_upload(client, files: list[tuple[str, bytes]]):
    """POST exactly these multipart bytes (filenames are not cleaned up by a client library)."""
    body, ctype = multipart(files)
    return client.post("/api/documents", data=body, content_type=ctype)


# --------------------------------------------------------------------------- refused at upload


REFUSED = [
    ("random.pdf", lambda: random.Random(7).randbytes(8192), 415, "not_pdf", "not a PDF"),
    ("picture.pdf", png_bytes, 415, "not_pdf", "not a PDF"),
    ("archive.pdf", zip_bytes, 415, "not_pdf", "not a PDF"),
    ("empty.pdf", lambda: b"", 422, "empty", "empty"),
    ("truncated.pdf", lambda: text_pdf(6, seed=8)[: len(text_pdf(6, seed=8)) * 2 // 3], 422, "corrupt", "incomplete"),
    ("header-only.pdf", lambda: b"%PDF-1.7\n" + bytes(range(256)) * 16, 422, "corrupt", "damaged"),
    ("huge.pdf", over_the_page_limit, 413, "too_many_pages", "10001 pages"),
]


def test_junk_and_oversized_uploads_are_refused_in_words(worker):
    app, client = make_client()
    before = {d["id"] for d in client.get("/api/documents").get_json()["documents"]}
    for name, make, status, code, words in REFUSED:
        data = make()
        started = time.perf_counter()
        resp = raw_upload(client, [(name, data)])
        body = json_error(resp, status, code)
        assert words in body["error"] and name in body["error"], (name, body)
        print(f"{name}: {status} {body['error']} ({time.perf_counter() - started:.2f}s)")
    after = {d["id"] for d in client.get("/api/documents").get_json()["documents"]}
    assert after == before, "a refused upload left a document behind"
    assert celery_ping(worker)


def celery_ping(worker) -> bool:
    from celery_config import celery_app

    replies = celery_app.control.ping(destination=[worker.hostname], timeout=5) or []
    return any(worker.hostname in r for r in replies)


def test_pdf_with_a_broken_page_tree_fails_with_a_reason(worker):
    app, client = make_client()
    resp = raw_upload(client, [("no-pages.pdf", broken_page_tree_pdf())])
    if resp.status_code != 202:  # refusing it at upload is as good
        json_error(resp, 422)
        return
    doc = wait_finished(client, resp.get_json()["documents"][0]["id"])
    assert doc["state"] == "failed" and "damaged" in doc["error"], doc
    print(f"broken page tree: {doc['error']}")
    assert celery_ping(worker)


# --------------------------------------------------------------------------- markup in PDFs


def test_markup_in_pdf_text_and_metadata_is_escaped_everywhere(worker):
    app, client = make_client()
    resp = raw_upload(client, [('<svg onload=alert(3)>.pdf', markup_pdf())])
    assert resp.status_code == 202, resp.get_json()
    doc_id = resp.get_json()["documents"][0]["id"]
    doc = wait_finished(client, doc_id)
    assert doc["state"] == "ready", doc

    # The API returns the text as data (JSON), unchanged.
    snippets = client.get(f"/api/documents/{doc_id}/snippets").get_json()["snippets"]
    assert any("<script>" in s["text"] for s in snippets), [s["text"] for s in snippets]

    pages = {
        "document": client.get(f"/documents/{doc_id}"),
        "index": client.get("/"),
        "search": client.get("/search", query_string={"q": "script alert pwned img", "document": doc_id}),
    }
    for where, page in pages.items():
        html = page.get_data(as_text=True)
        assert page.status_code == 200, (where, page.status_code)
        for raw in ("<script>alert", "<img src=x", "<svg onload", "<b>bold", "<i>x</i>"):
            assert raw not in html, f"unescaped {raw!r} on the {where} page"
    document_html = pages["document"].get_data(as_text=True)
    assert "&lt;script&gt;alert(" in document_html and "&lt;img src=x onerror=alert(2)&gt;" in document_html
    # The list on / is JSON in a <script type="application/json"> block: markup there must be \u-escaped
    # (no "</script>" can close the block); app.js then only ever sets textContent.
    assert "\\u003csvg onload=alert(3)\\u003e.pdf" in pages["index"].get_data(as_text=True)
    search_html = pages["search"].get_data(as_text=True)
    assert "&lt;" in search_html and "<mark>" in search_html, "the search page shows the snippet, marked and escaped"
    for page in pages.values():
        assert "script-src" in page.headers.get("Content-Security-Policy", "") or \
            "default-src 'self'" in page.headers.get("Content-Security-Policy", "")


# --------------------------------------------------------------------------- hostile filenames


HOSTILE_NAMES = [
    "../../../../../../tmp/escape-{tag}.pdf",
    "/etc/cron.d/escape-{tag}.pdf",
    "..\\..\\..\\escape-{tag}.pdf",
    "..",
    "dir/../../escape-{tag}.pdf",
    "ctrl-\x01\x07\x1b[31mred\x7f-{tag}.pdf",
    "nul-\x00-{tag}.pdf",
    "rtl-\u202egnp.exe-{tag}.pdf",
    "{tag}-" + "A" * 300 + ".pdf",
    "<img src=x onerror=alert(4)>-{tag}.pdf",
    'quote"; filename="evil-{tag}.sh',
    "</script><script>alert(5)</script>-{tag}.pdf",
]


def test_hostile_filenames_never_leave_data_dir_and_are_shown_safely(redis_server, tmp_path):
    tag = uuid.uuid4().hex[:8]
    data_dir = tmp_path / "data"
    app, client = make_client(str(data_dir))
    try:
        uploaded = {}
        for i, template in enumerate(HOSTILE_NAMES):
            name = template.format(tag=tag)
            resp = raw_upload(client, [(name, text_pdf(1, seed=4000 + i, sections=1, words=10))])
            assert resp.status_code == 202, (name, resp.get_json())
            doc = resp.get_json()["documents"][0]
            uploaded[doc["id"]] = (name, doc["filename"])

        for doc_id, (sent, shown) in uploaded.items():
            assert "/" not in shown and "\\" not in shown, shown
            assert not any(ord(c) < 32 or ord(c) == 127 or c == "\u202e" for c in shown), repr(shown)
            assert 0 < len(shown) <= 200 and shown not in (".", ".."), repr(shown)
            # The name also travels in a header: one attachment parameter pair, nothing injected.
            disposition = client.get(f"/api/documents/{doc_id}/export").headers["Content-Disposition"]
            kind, params = parse_options_header(disposition)
            assert kind == "attachment" and set(params) <= {"filename", "filename*"}, disposition
            assert disposition.isascii() and "\r" not in disposition and "\n" not in disposition, disposition
            assert "/" not in params["filename"] and "\\" not in params["filename"], disposition

        # Every file the uploads produced is inside DATA_DIR, and nothing is named after them.
        root = tmp_path.resolve()
        for path in list_files(tmp_path):
            assert path.resolve().is_relative_to(data_dir.resolve()), path
            assert tag not in path.name, path
        for escaped in (Path("/tmp") / f"escape-{tag}.pdf", Path("/etc/cron.d") / f"escape-{tag}.pdf",
                        root.parent / f"escape-{tag}.pdf"):
            assert not escaped.exists(), escaped

        html = client.get("/").get_data(as_text=True)
        assert "<img src=x onerror=alert(4)>" not in html and "\\u003cimg src=x onerror=alert(4)\\u003e" in html
        assert html.count("</script>") == html.count("<script"), "a filename closed a script block"
        assert "\x1b" not in html and "\x00" not in html and "\u202e" not in html
    finally:
        app.extensions["docenrich"].store.close()
