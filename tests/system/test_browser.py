"""The page in headless Chromium against `python app.py` and a real worker.

Set UPDATE_SCREENSHOT=1 to also write docs/search.png from the screenshot test.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.helpers.env import ROOT, SESSION_DIR, corpus_file
from tests.helpers.pdfs import pdf_with_text
from tests.helpers.wait import wait_for
from tests.stack import WebProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

INGEST_MS = 240_000
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture(scope="module")
def web(worker):
    """`python app.py` on a free port over the session's Redis and worker, always terminated."""
    app = WebProcess("browser-web", {"SECRET_KEY": "browser"}).start()
    try:
        health = wait_for(lambda: (body := app.get("/healthz").json()).get("workers") and body, 30, 0.5,
                          "the app to see the worker")
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
    path.write_bytes(pdf_with_text(*paragraphs, fontsize=12))
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


def test_collection_picker_for_upload_and_search(web, page, tmp_path):
    marker = uuid.uuid4().hex[:8]
    collection = f"harbour-{marker}"
    pdf = make_pdf(tmp_path / f"tides-{marker}.pdf",
                   f"Harbour masters {marker} publish tide tables so that ships can enter the port at high water.")
    page.goto(web.url + "/")
    page.fill("#collection-input", collection)
    page.set_input_files("#file-input", str(pdf))
    wait_uploads_ready(page, 1)
    row = page.locator(f".doc-row:has-text('{pdf.name}')")
    row.locator(".badge-collection", has_text=collection).wait_for(timeout=20_000)

    page.goto(web.url + "/search")
    page.select_option("select[name=collection]", value=collection)
    page.fill("#q", "when can ships enter the port")
    page.uncheck("input[type=checkbox][name=rerank]")
    page.click(".searchbox button[type=submit]")
    page.wait_for_url(f"**collection={collection}**")
    page.locator(".result").first.wait_for()
    sources = page.locator(".result-source a:first-child").all_text_contents()
    assert sources and set(sources) == {pdf.name}, sources

    # The collection page lists it, and deleting the collection takes the document with it.
    page.goto(f"{web.url}/collections/{collection}")
    assert page.locator(".doc-row .doc-name").all_text_contents() == [pdf.name]
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#delete-collection")
    page.wait_for_url("**/collections")
    assert collection not in page.locator("#collections-table").text_content()
    assert page.errors == []


def test_status_page_shows_the_worker_and_its_model(web, page, worker, tmp_path):
    # Something ingested in the last hour, for the chart.
    page.goto(web.url + "/")
    page.set_input_files("#file-input", str(make_pdf(tmp_path / f"s-{uuid.uuid4().hex[:6]}.pdf", "Status chart text.")))
    wait_uploads_ready(page, 1)
    page.goto(web.url + "/status")
    row = page.locator(f".worker[data-worker='{worker.hostname}']")
    row.wait_for()
    assert row.get_attribute("data-online") == "yes"
    # A search makes the worker hold a model; the page reloads itself every 10 s.
    page.goto(f"{web.url}/search?q=anything+at+all&rerank=0")
    page.goto(web.url + "/status")
    model = row.locator(".model")
    wait_for(lambda: ("embedder:" in model.text_content() or "reranker:" in model.text_content())
             or page.reload(), 20, 1.0, "the status page to show the resident model")
    assert "all-MiniLM-L6-v2" in model.text_content() or "minilm" in model.text_content().lower()
    assert {c.strip() for c in page.locator("#queues th").all_text_contents()} == {"interactive", "models", "docs"}
    chart = page.locator("#throughput-chart")
    assert chart.locator("rect.bar-rect").count() == 60
    assert chart.locator("rect.bar-rect[height]:not([height='0'])").count() >= 1  # this session ingested
    shot = SESSION_DIR / "status.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "docs" / "status.png")
    assert page.errors == []


def open_first_citation(page, search_url: str):
    """Search, follow the first result's page link, check the page image is drawn; the cited box."""
    page.goto(search_url)
    first = page.locator(".result").first
    first.wait_for()
    first.locator("a.cite-link").click()
    page.wait_for_url("**/pages/*?snippet=*")
    image = page.locator("#page-image")
    assert image.evaluate("img => img.complete ? img.naturalWidth : "
                          "new Promise(r => img.onload = () => r(img.naturalWidth))") >= 1000
    box = page.locator("rect.box-cited")
    assert box.count() == 1
    return box


def test_cited_page_draws_the_snippet_box(web, page):
    path = corpus_file("026-latex-multicolumn/multicolumn.pdf")
    page.goto(web.url + "/")
    page.set_input_files("#file-input", str(path))
    wait_uploads_ready(page, 1)
    doc_id = page.locator(".upload").first.get_attribute("data-id")
    query = f"q=population+and+capital+of+EU+countries&rerank=0&document={doc_id}"
    box = open_first_citation(page, f"{web.url}/search?{query}")
    cited_id = box.get_attribute("data-snippet")
    assert page.locator(f"#snippet-{cited_id}.is-cited").count() == 1
    # The box lies on the drawn page, with a real size, and the other snippets are listed beside it.
    frame = page.locator(".cited-frame").bounding_box()
    drawn = box.bounding_box()
    assert drawn["width"] > 20 and drawn["height"] > 5
    assert frame["x"] <= drawn["x"] and drawn["x"] + drawn["width"] <= frame["x"] + frame["width"] + 1
    assert frame["y"] <= drawn["y"] and drawn["y"] + drawn["height"] <= frame["y"] + frame["height"] + 1
    assert page.locator(".cited-snippet").count() == page.locator("rect.box").count() >= 1
    shot = SESSION_DIR / "cited.png"
    page.screenshot(path=str(shot), full_page=False)
    if os.environ.get("UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "docs" / "cited.png")
    assert page.errors == []
