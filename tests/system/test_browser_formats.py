"""Documents of other formats through the page in headless Chromium: a DOCX and an HTML file dropped
together, each ready, each found, and each one's cited page drawn with the passage's box."""
from __future__ import annotations

import urllib.parse

import pytest

from docenrich import formats
from tests.helpers import formats as samples
from tests.system.test_browser import (  # noqa: F401  (fixtures)
    browser,
    open_first_citation,
    page,
    wait_uploads_ready,
    web,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def open_cited_page(page, base: str, doc_id: str, phrase: str) -> None:  # noqa: F811
    """Search the document for the phrase, follow the first result's page link, check the drawn page."""
    query = urllib.parse.urlencode({"q": phrase, "mode": "lexical", "rerank": 0, "document": doc_id})
    box = open_first_citation(page, f"{base}/search?{query}")
    assert phrase.lower() in page.locator(".cited-snippet.is-cited .snippet-text").text_content().lower()
    drawn = box.bounding_box()
    assert drawn["width"] > 20 and drawn["height"] > 5


@pytest.mark.skipif(formats.soffice() is None, reason="LibreOffice is not installed: apt-get install "
                    "libreoffice-writer-nogui libreoffice-impress-nogui libreoffice-calc-nogui")
def test_a_docx_and_an_html_file_uploaded_on_the_page_open_on_their_cited_pages(web, page):  # noqa: F811
    docx, html = samples.BY_KIND["docx"], samples.BY_KIND["html"]
    page.goto(web.url + "/")
    accept = page.locator("#file-input").get_attribute("accept").split(",")
    assert ".docx" in accept and ".html" in accept and ".pdf" in accept
    page.set_input_files("#file-input", [str(docx.path), str(html.path)])
    wait_uploads_ready(page, 2)
    ids = {name: page.locator(".upload", has_text=name).first.get_attribute("data-id")
           for name in (docx.name, html.name)}
    for sample in (docx, html):
        open_cited_page(page, web.url, ids[sample.name], sample.phrase)
    assert page.errors == []
