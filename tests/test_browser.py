"""The page in headless Chromium against `python app.py` and a real worker.

Set UPDATE_SCREENSHOT=1 to also write docs/search.png from the screenshot test.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pymupdf
import pytest

from docenrich.cli.redis_server import free_port
from tests.conftest import ROOT, SESSION_DIR, TEST_ENV, corpus_file, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

INGEST_MS = 240_000
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


class WebApp:
    """`python app.py` on a free port, always terminated."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = SESSION_DIR / f"web-{self.port}.log"
        env = {**os.environ, **TEST_ENV, "WEB_HOST": "127.0.0.1", "WEB_PORT": str(self.port), "SECRET_KEY": "browser"}
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def health(self) -> dict | None:
        if self.process.poll() is not None:
            raise AssertionError(f"app.py exited with {self.process.returncode}:\n{self.log_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            return json.load(exc)
        except OSError:
            return None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def web(worker):
    app = WebApp()
    try:
        health = wait_for(app.health, 60, 0.3, "app.py to answer /healthz")
        wait_for(lambda: (app.health() or {}).get("workers"), 30, 0.5, "the app to see the worker")
        assert health["redis"]["ok"], health
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: pip install playwright (the Python package; Chromium comes from apt)")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Chromium is not installed: sudo apt-get install chromium")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.errors = errors
    yield tab
    context.close()


def make_pdf(path: Path, *paragraphs: str) -> Path:
    doc = pymupdf.open()
    for text in paragraphs:
        page = doc.new_page()
        page.insert_textbox(pymupdf.Rect(72, 72, 520, 770), text, fontsize=12)
    doc.save(path)
    doc.close()
    return path


def wait_uploads_ready(page, count: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('.upload[data-state=\"ready\"]').length >= n", arg=count, timeout=INGEST_MS
    )


def test_upload_progress_then_search_with_image(web, page, tmp_path):
    marker = uuid.uuid4().hex[:8]
    pdf = make_pdf(
        tmp_path / f"orchards-{marker}.pdf",
        f"Apple orchards in cold valleys need late frost protection. Growers {marker} run wind machines "
        "on clear nights so that the blossoms survive until the bees arrive.",
        "Pruning happens in winter, when the trees are dormant and the cuts heal cleanly.",
    )
    page.goto(web.url + "/")
    states: list[str] = []
    page.expose_function("recordState", lambda state: states.append(state))
    page.evaluate(
        """() => new MutationObserver(() => {
             const row = document.querySelector('.upload');
             if (row) window.recordState(row.dataset.state + ' ' + row.querySelector('.upload-status').textContent);
           }).observe(document.getElementById('uploads'), {subtree: true, childList: true, attributes: true, characterData: true})"""
    )
    page.set_input_files("#file-input", str(pdf))
    row = page.locator(".upload").first
    wait_uploads_ready(page, 1)
    assert row.locator(".upload-name").text_content() == pdf.name
    assert row.locator(".upload-status").text_content().startswith("Ready")
    assert row.locator(".bar-fill").evaluate("n => n.style.width") == "100%"
    assert any(s.startswith("uploading") for s in states), states
    # The library list shows the new document once the row is ready.
    page.locator(f".doc-row[data-state=ready] >> text={pdf.name}").wait_for(timeout=20_000)

    page.fill(".topsearch input[name=q]", "protecting apple blossoms from frost at night")
    page.press(".topsearch input[name=q]", "Enter")
    page.wait_for_url("**/search?q=*")
    page.locator(".result").first.wait_for()
    # Narrow to the new document in vector order: other tests' documents share this index, and
    # the test reranker's random head makes the reranked order arbitrary.
    page.select_option("select[name=document]", label=pdf.name)
    page.uncheck("input[type=checkbox][name=rerank]")
    page.click(".searchbox button[type=submit]")
    page.wait_for_url("**rerank=0*")
    result = page.locator(".result", has_text=marker).first
    result.wait_for()
    assert result.locator(".result-source a").text_content() == pdf.name
    assert result.locator("mark").count() > 0
    image = result.locator(".result-image img")
    image.scroll_into_view_if_needed()
    assert image.evaluate("img => img.complete ? img.naturalWidth : new Promise(r => img.onload = () => r(img.naturalWidth))") > 0
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
    assert (tmp_path / "search.png").stat().st_size > 10_000
    assert page.errors == []


def test_pdf_text_and_filename_are_shown_not_executed(web, page, tmp_path):
    marker = uuid.uuid4().hex[:8]
    payload = "<script>alert(1)</script>"
    pdf = make_pdf(tmp_path / "x.pdf", f"Harmless text {marker} {payload} and <img src=x onerror=alert(2)> too.")
    name = f"<img src=x onerror=alert(3)>{marker}.pdf"
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(web.url + "/")
    page.set_input_files("#file-input", files=[{"name": name, "mimeType": "application/pdf", "buffer": pdf.read_bytes()}])
    wait_uploads_ready(page, 1)
    assert page.locator(".upload-name").first.text_content() == name
    doc_link = page.locator(".doc-row a.doc-name", has_text=marker).first
    doc_link.wait_for(timeout=20_000)
    assert doc_link.text_content() == name

    doc_id = doc_link.get_attribute("href").rsplit("/", 1)[-1]
    doc_link.click()
    page.wait_for_selector(".snippet-text")
    texts = page.locator(".snippet-text").all_text_contents()
    assert any(payload in t for t in texts), texts
    assert page.locator(".snippet-text script").count() == 0 and page.locator(".snippet-text img").count() == 0

    page.goto(f"{web.url}/search?q=script+alert+{marker}&document={doc_id}&rerank=0")
    result = page.locator(".result", has_text=marker).first
    result.wait_for()
    assert payload in result.locator(".result-text").text_content()
    assert result.locator(".result-text script").count() == 0
    page.wait_for_timeout(500)
    assert dialogs == [] and page.errors == []


def test_search_page_screenshot(web, page, tmp_path):
    """Ingest two corpus PDFs through the page (one drop of two files) and photograph a search."""
    paths = [corpus_file("026-latex-multicolumn/multicolumn.pdf"), corpus_file("004-pdflatex-4-pages/pdflatex-4-pages.pdf")]
    page.goto(web.url + "/")
    page.set_input_files("#file-input", [str(p) for p in paths])
    wait_uploads_ready(page, 2)
    # Vector order: the test reranker has a random head, so its order means nothing on a picture.
    page.goto(f"{web.url}/search?q=population+and+capital+of+EU+countries&rerank=0")
    page.locator(".result").first.wait_for()
    # Lazy images below the fold never load in a still screenshot; the visible ones must have.
    page.wait_for_function("() => [...document.querySelectorAll('img:not([loading=lazy])')].every(i => i.complete)")
    shot = tmp_path / "search.png"
    page.screenshot(path=str(shot), full_page=False)
    if os.environ.get("UPDATE_SCREENSHOT"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "search.png")
    assert shot.stat().st_size > 10_000 and page.errors == []
