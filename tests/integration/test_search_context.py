"""Results with context through the real API, page and command line, with the session's worker: a
three-page handbook with chapters and sections, searched with context=2, gives each hit the right
neighbours in reading order (across pages, fewer at the document's edges) and its heading path as
its breadcrumb; snippets_around on both backends."""
from __future__ import annotations

import json
import re

import pytest

from docenrich.records import Snippet
from tests.helpers.pdfs import HANDBOOK, handbook_pdf
from tests.helpers.web import upload, wait_ready
from tests.storeutil import pdf_bytes

TITLE = "Coastal Notes"
PARAGRAPHS = [text for page in HANDBOOK for kind, text in page if kind == "p"]  # each one's distinct word


@pytest.fixture(scope="module")
def handbook(app):
    """The handbook, processed, with its snippets in reading order as the API lists them."""
    client = app.test_client()
    doc = wait_ready(client, upload(client, handbook_pdf(), "coastal-notes.pdf")["id"])
    listed = client.get(f"/api/documents/{doc['id']}/snippets").get_json()["snippets"]
    return doc["id"], listed


def word(text: str) -> str:
    """Which handbook paragraph a snippet's text is, by its distinct word."""
    return next(w for w in PARAGRAPHS if w in text.split())


def search(client, doc_id: str, query: str, **params) -> dict:
    args = {"q": query, "document": doc_id, "mode": "lexical", "rerank": "0", **params}
    response = client.get("/api/search", query_string=args)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_the_handbook_reads_in_six_snippets_with_their_heading_paths(handbook):
    _, listed = handbook
    assert [word(s["text"]) for s in listed] == PARAGRAPHS == [
        "anemometer", "barnacle", "cormorant", "dolphin", "estuary", "fathom"]
    assert [s["page"] for s in listed] == [1, 1, 2, 2, 3, 3]
    assert [s["meta"]["path"] for s in listed] == [
        ["Tides", "Measuring the Sea"], ["Tides", "Tide Tables"], ["Tides", "Spring Tides"],
        ["Harbours", "Breakwaters"], ["Harbours", "Moorings"], ["Harbours", "Dredging"]]


def test_context_two_gives_the_neighbours_in_reading_order_across_pages(app, handbook):
    doc_id, listed = handbook
    body = search(app.test_client(), doc_id, "dolphin", context=2, k=1)
    assert body["context"] == 2
    (hit,) = body["results"]
    assert word(hit["text"]) == "dolphin" and hit["snippet_id"] == listed[3]["id"]
    assert hit["breadcrumb"] == [TITLE, "Harbours", "Breakwaters"] == [TITLE, *listed[3]["meta"]["path"]]
    expected = {"context_before": listed[1:3], "context_after": listed[4:6]}
    for side, snippets in expected.items():
        assert [n["snippet_id"] for n in hit[side]] == [s["id"] for s in snippets], side
        assert [(n["ordinal"], n["page"], n["kind"], n["text"]) for n in hit[side]] == [
            (s["ordinal"], s["page"], s["kind"], s["text"]) for s in snippets], side
    ordinals = [n["ordinal"] for n in hit["context_before"]] + [hit["ordinal"]] + [n["ordinal"] for n in hit["context_after"]]
    assert ordinals == sorted(ordinals) and len(set(ordinals)) == 5


def test_fewer_neighbours_at_the_document_edges_and_none_by_default(app, handbook):
    doc_id, listed = handbook
    client = app.test_client()
    first = search(client, doc_id, "anemometer", context=2, k=1)["results"][0]
    assert first["context_before"] == [] and [word(n["text"]) for n in first["context_after"]] == ["barnacle", "cormorant"]
    assert first["breadcrumb"] == [TITLE, "Tides", "Measuring the Sea"]
    last = search(client, doc_id, "fathom", context=5, k=1)["results"][0]
    assert [n["snippet_id"] for n in last["context_before"]] == [s["id"] for s in listed[:5]] and last["context_after"] == []
    plain = search(client, doc_id, "fathom", k=1)
    assert plain["context"] == 0 and plain["results"][0]["context_before"] == plain["results"][0]["context_after"] == []
    for bad in ("6", "-1", "two"):
        response = client.get("/api/search", query_string={"q": "fathom", "context": bad})
        assert response.status_code == 400 and response.get_json()["code"] == "bad_parameter", bad


def test_every_hit_of_a_hybrid_search_has_its_own_neighbours(app, handbook):
    doc_id, listed = handbook
    order = [s["id"] for s in listed]
    body = search(app.test_client(), doc_id, "harbour breakwaters and moorings", mode="hybrid", context=1, k=6)
    assert len(body["results"]) == 6 and "context" in body["timings_ms"]
    for hit in body["results"]:
        at = order.index(hit["snippet_id"])
        assert [n["snippet_id"] for n in hit["context_before"]] == order[max(0, at - 1) : at]
        assert [n["snippet_id"] for n in hit["context_after"]] == order[at + 1 : at + 2]
        assert hit["breadcrumb"] == [TITLE, *listed[at]["meta"]["path"]]


def test_the_search_page_shows_the_breadcrumb_and_the_context(app, handbook):
    doc_id, _ = handbook
    page = app.test_client().get("/search", query_string={"q": "dolphin", "document": doc_id, "mode": "lexical",
                                                          "context": "2"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    first = html[html.index('<li class="result">'):]
    first = first[: first.index("</li>")]
    assert re.search(r"<span>Coastal Notes</span> › <span>Harbours</span> › <span>Breakwaters</span>", first)
    before, after = first.index('class="context context-before"'), first.index('class="context context-after"')
    text = first.index('class="result-text"')
    assert before < first.index("barnacle") < first.index("cormorant") < text < after
    assert after < first.index("estuary") < first.index("fathom")
    assert '<option value="2" selected>' in html


def test_the_command_line_prints_the_context(app, handbook):
    doc_id, listed = handbook
    runner = app.test_cli_runner()
    table = runner.invoke(args=["docenrich", "search", "dolphin", "--document", doc_id, "--no-rerank", "-k", "1",
                                "--context", "1"])
    assert table.exit_code == 0, table.output
    lines = [line for line in table.stdout.splitlines()[1:] if line.strip()]
    assert [line.split()[0] for line in lines] == ["↑", "1", "↓"]
    assert "cormorant" in lines[0] and "dolphin" in lines[1] and "estuary" in lines[2]
    found = runner.invoke(args=["docenrich", "search", "dolphin", "--document", doc_id, "--no-rerank", "-k", "1",
                                "--context", "2", "--json"])
    (row,) = json.loads(found.stdout)["results"]
    assert row["breadcrumb"] == [TITLE, "Harbours", "Breakwaters"]
    assert [n["snippet_id"] for n in row["context_before"] + row["context_after"]] == [
        s["id"] for s in listed[1:3] + listed[4:6]]
    assert runner.invoke(args=["docenrich", "search", "dolphin", "--context", "9"]).exit_code == 2


def test_snippets_around_on_both_backends(any_store):
    st = any_store
    doc, _ = st.add_document(pdf_bytes("around"), "around.pdf")
    st.begin_batches(doc.id, 1)
    layout = {1: 2, 2: 1, 4: 3, 5: 1}  # page 3 has no snippet
    st.save_batch(doc.id, 0, [Snippet(text=f"p{p} s{i}", page=p, bbox=(0, 0, 1, 1), document_id=doc.id,
                                      ordinal=p * 1000 + i) for p, count in layout.items() for i in range(count)])
    def texts(found):
        return [s.text for s in found]

    assert texts(st.snippets_around(doc.id, [2000], 2)) == ["p1 s0", "p1 s1", "p2 s0", "p4 s0", "p4 s1"]
    assert texts(st.snippets_around(doc.id, [1000, 5000], 1)) == ["p1 s0", "p1 s1", "p4 s2", "p5 s0"]
    assert texts(st.snippets_around(doc.id, [4000, 4001], 2)) == ["p1 s1", "p2 s0", "p4 s0", "p4 s1", "p4 s2", "p5 s0"]
    assert st.snippets_around(doc.id, [], 3) == [] and st.snippets_around("0" * 16, [1000], 3) == []
