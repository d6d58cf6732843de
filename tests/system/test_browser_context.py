"""The search page in headless Chromium shows each result's breadcrumb and, when asked for, the
passages before and after it: muted, in reading order around the result, long ones collapsed."""
from __future__ import annotations

import uuid

import pytest

from tests.helpers.pdfs import handbook_pdf
from tests.system.test_browser import browser, page, wait_uploads_ready, web  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_search_page_shows_the_breadcrumb_and_the_context(web, page):  # noqa: F811
    name = f"coastal-notes-{uuid.uuid4().hex[:8]}.pdf"
    page.goto(web.url + "/")
    page.set_input_files("#file-input", files=[{"name": name, "mimeType": "application/pdf",
                                                "buffer": handbook_pdf(seed=uuid.uuid4().int % 10**6)}])
    wait_uploads_ready(page, 1)
    page.locator(f".doc-row[data-state=ready] >> text={name}").wait_for(timeout=20_000)

    page.goto(web.url + "/search")
    page.fill(".searchbox input[name=q]", "dolphin")
    page.select_option("select[name=document]", label=name)
    page.select_option("select[name=mode]", "lexical")
    page.select_option("select[name=context]", "2")
    page.uncheck("input[type=checkbox][name=rerank]")
    page.click(".searchbox button[type=submit]")
    page.wait_for_url("**context=2*")
    result = page.locator(".result", has_text="dolphin").first
    result.wait_for()
    assert page.locator("select[name=context]").input_value() == "2"

    crumb = result.locator(".breadcrumb")
    assert crumb.is_visible() and " ".join(crumb.inner_text().split()) == "Coastal Notes › Harbours › Breakwaters"
    before, text, after = (result.locator(sel) for sel in (".context-before", ".result-text", ".context-after"))
    assert [before.locator(".context-item").count(), after.locator(".context-item").count()] == [2, 2]
    tops = [loc.bounding_box()["y"] for loc in (crumb, before, text, after)]
    assert tops == sorted(tops), tops  # breadcrumb, passages before, the result, passages after
    items = before.locator(".context-item")
    assert "barnacle" in items.nth(0).inner_text() and "cormorant" in items.nth(1).inner_text()
    assert "estuary" in after.locator(".context-item").nth(0).inner_text()
    assert "page 3" in after.locator(".context-item").nth(0).inner_text()  # the hit is on page 2

    # Muted, and a long passage shows its start until it is opened.
    muted = page.evaluate("() => getComputedStyle(document.querySelector('.context')).color")
    assert muted != text.evaluate("n => getComputedStyle(n).color")
    first = items.nth(0)
    full = first.locator("p")
    assert first.evaluate("n => n.tagName") == "DETAILS" and not full.is_visible()
    assert first.locator(".context-preview").is_visible()
    first.locator("summary").click()
    full.wait_for(state="visible")
    assert "barnacle" in full.inner_text() and not first.locator(".context-preview").is_visible()
    assert page.errors == []

    # Without context, only the result itself.
    page.select_option("select[name=context]", "0")
    page.click(".searchbox button[type=submit]")
    page.wait_for_url("**context=0*")
    again = page.locator(".result", has_text="dolphin").first
    again.wait_for()
    assert again.locator(".context").count() == 0 and again.locator(".breadcrumb").is_visible()
