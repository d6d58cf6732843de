"""Hostile input through the real API and the real worker: junk files, bombs, markup in PDFs,
hostile filenames, and a bounded fuzz of the PDF entry points.

Every input is generated here. Uploads go through the app (`create_app`, Flask's client)
over the session's Redis and worker; the memory measurements use a dedicated document
worker so its peak RSS (VmHWM) belongs to the bomb alone.
"""
from __future__ import annotations

import io
import os
import random
import re
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pymupdf
import pytest
from werkzeug.http import parse_options_header

from tests.conftest import CORPUS, ROOT, wait_for
from tests.stack import bomb_pdf, doubled_pdf, list_files, multipart, text_pdf

pytestmark = pytest.mark.slow

INGEST_TIMEOUT = 180
GIB = 1 << 30


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


def broken_page_tree() -> bytes:
    """/Count says one page but /Kids is empty: opens, counts 1 page, has none."""
    data = text_pdf(1, seed=6)
    return re.sub(rb"/Kids\s*\[[^\]]*\]", b"/Kids [ ]", data, count=1)


MARKUP = '<script>alert("pwned")</script> <img src=x onerror=alert(2)> & "quotes" <b>bold</b>'


def markup_pdf() -> bytes:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_textbox(pymupdf.Rect(60, 60, 540, 400), f"Markup test {uuid.uuid4().hex}. {MARKUP}", fontsize=11)
    doc.set_metadata({"title": '<script>alert("title")</script>', "author": "<i>x</i>"})
    data = doc.tobytes()
    doc.close()
    return data


# --------------------------------------------------------------------------- API helpers


def make_client(data_dir: str | None = None, **config):
    from app import create_app

    app = create_app({"TESTING": True, "SECRET_KEY": "test", "API_TOKEN": "",
                      "DATA_DIR": data_dir or os.environ["DATA_DIR"], **config})
    return app, app.test_client()


def raw_upload(client, files: list[tuple[str, bytes]]):
    """POST exactly these multipart bytes (filenames are not cleaned up by a client library)."""
    body, ctype = multipart(files)
    return client.post("/api/documents", data=body, content_type=ctype)


def json_error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.data[:400])
    assert resp.is_json, resp.data[:200]
    body = resp.get_json()
    text = resp.get_data(as_text=True)
    assert body["error"] and "Traceback" not in text and str(ROOT) not in text and "/tmp/" not in text, body
    if code:
        assert body["code"] == code, body
    return body


def wait_finished(client, doc_id: str, timeout: float = INGEST_TIMEOUT) -> dict:
    def finished():
        doc = client.get(f"/api/documents/{doc_id}").get_json()
        return doc if doc["state"] in ("ready", "failed") else None

    return wait_for(finished, timeout, 0.3, f"document {doc_id} to finish")


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
    resp = raw_upload(client, [("no-pages.pdf", broken_page_tree())])
    if resp.status_code != 202:  # refusing it at upload is as good
        json_error(resp, 422)
        return
    doc = wait_finished(client, resp.get_json()["documents"][0]["id"])
    assert doc["state"] == "failed" and "damaged" in doc["error"], doc
    print(f"broken page tree: {doc['error']}")
    assert celery_ping(worker)


def test_broken_page_tree_is_a_pdf_error_not_an_index_error():
    from docenrich.pdf import PDFError, extract_snippets

    with pytest.raises(PDFError) as err:
        extract_snippets(broken_page_tree(), "0" * 16)
    assert err.value.code == "corrupt"


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


# --------------------------------------------------------------------------- decompression bombs


class PeakMemory:
    """Samples VmHWM (peak RSS) of a worker's processes while work runs."""

    def __init__(self, worker):
        self.worker = worker
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def vm_hwm_kb(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def sample(self) -> int:
        pids = [self.worker.process.pid, *self.worker.child_pids()]
        self.peak_kb = max([self.peak_kb, *(self.vm_hwm_kb(p) for p in pids)])
        return self.peak_kb

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def extract_directly(stack, data: bytes, name: str, timeout: float = 120) -> dict:
    """Store a PDF and run its (only) page batch in the document worker; returns the task result."""
    from docenrich.pdf import inspect_pdf

    doc, _ = stack.store.add_document(data, name, inspect_pdf(data))
    stack.store.begin_batches(doc.id, 1)
    return stack.app.send_task("docenrich.extract_pages", args=[doc.id, 0], queue="docs",
                                ignore_result=False).get(timeout=timeout)


@pytest.fixture(scope="module")
def bomb_stack(tmp_path_factory):
    """A document-only worker (no model: extraction is where bombs go off) on its own Redis."""
    from tests.stack import Stack

    stack = Stack(tmp_path_factory.mktemp("bombs"))
    try:
        worker = stack.worker("bombs", "docs", MAX_TASKS_PER_CHILD="1000")
        yield stack, worker
    finally:
        stack.close()


def test_content_stream_bomb_keeps_memory_bounded(bomb_stack):
    stack, worker = bomb_stack
    data = bomb_pdf("content", 1024)  # 1 GiB of zeros as a content stream, ~1 MB on disk
    assert len(data) < 2 << 20
    with PeakMemory(worker) as memory:
        started = time.monotonic()
        result = extract_directly(stack, data, "content-bomb.pdf")
        took = time.monotonic() - started
    print(f"content-stream bomb ({len(data) / 1e6:.1f} MB -> 1 GiB): {result}, {took:.1f}s, "
          f"worker peak RSS {memory.peak_kb / 1024:.0f} MiB")
    assert result.get("snippets", 0) >= 1
    assert memory.peak_kb * 1024 < 1 * GIB, f"peak RSS {memory.peak_kb / 1024:.0f} MiB"
    assert stack.app.control.ping(destination=[worker.hostname], timeout=5)


def test_image_bomb_memory_does_not_grow_with_declared_pixels(bomb_stack):
    stack, worker = bomb_stack
    data = bomb_pdf("image", 1024)  # a 32768 x 32768 gray image of zeros (1 GiB of pixels), ~1 MB on disk
    with PeakMemory(worker) as memory:
        before = memory.sample()
        started = time.monotonic()
        result = extract_directly(stack, data, "image-bomb.pdf")
        took = time.monotonic() - started
    grew = (memory.peak_kb - before) * 1024
    print(f"image bomb ({len(data) / 1e6:.2f} MB -> 1 GiB of pixels): {result}, {took:.1f}s, peak RSS "
          f"{memory.peak_kb / 1024:.0f} MiB (+{grew / 2**20:.0f} MiB)")
    assert result.get("snippets", 0) >= 1
    assert stack.app.control.ping(destination=[worker.hostname], timeout=5), "the worker stays up"
    assert memory.peak_kb * 1024 < 3 * GIB
    assert grew < 256 << 20, f"extraction grew the worker by {grew / 2**20:.0f} MiB for a 1 MB file"


# --------------------------------------------------------------------------- fuzzing


FUZZ_SECONDS = 45


def test_fuzzed_corpus_pdfs_raise_only_pdferror_and_never_hang():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from docenrich.pdf import PDFError, extract_snippets, inspect_pdf

    seeds = sorted(p for p in CORPUS.rglob("*.pdf") if p.stat().st_size < 100_000) if CORPUS.exists() else []
    if not seeds:
        pytest.skip(f"the shared PDF corpus is absent ({CORPUS})")
    datas = [p.read_bytes() for p in seeds]
    deadline = time.monotonic() + FUZZ_SECONDS
    stats = {"examples": 0, "pdf_errors": 0, "slowest": 0.0}

    edit = st.tuples(st.sampled_from(["set", "delete", "insert"]), st.floats(0, 1), st.binary(min_size=1, max_size=64))

    @settings(max_examples=3000, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(which=st.integers(0, len(datas) - 1), edits=st.lists(edit, min_size=1, max_size=12),
           cut=st.one_of(st.none(), st.floats(0, 1)))
    def fuzz(which, edits, cut):
        if time.monotonic() > deadline:
            return
        data = bytearray(datas[which])
        for op, where, blob in edits:
            pos = int(where * (len(data) - 1))
            if op == "set":
                data[pos:pos + len(blob)] = blob
            elif op == "delete":
                del data[pos:pos + len(blob) * 8]
            else:
                data[pos:pos] = blob
        if cut is not None:
            data = data[: max(1, int(cut * len(data)))]
        started = time.monotonic()
        for step in (inspect_pdf, lambda d: extract_snippets(d, "0" * 16, ocr=False)):
            try:
                step(bytes(data))
            except PDFError as exc:
                assert exc.code in PDFError.MESSAGES and str(exc), exc
                stats["pdf_errors"] += 1
        took = time.monotonic() - started
        stats["examples"] += 1
        stats["slowest"] = max(stats["slowest"], took)
        assert took < 20, f"one input took {took:.1f}s"

    fuzz()
    print(f"fuzz: {stats['examples']} mutated PDFs from {len(seeds)} corpus files, {stats['pdf_errors']} PDFError, "
          f"slowest {stats['slowest']:.2f}s")
