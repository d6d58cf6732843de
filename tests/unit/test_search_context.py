"""Results with context, without servers: neighbours in reading order from a window, one store query
per document, SQLite's snippets_around across pages and gaps, breadcrumbs, and how the API, the
command line and the page present them."""
from __future__ import annotations

from pathlib import Path

import pytest

from docenrich.context import MAX_CONTEXT, attach_neighbours, breadcrumb, neighbours
from docenrich.records import Snippet, StoredSnippet
from docenrich.search import Hit, SearchResult
from docenrich.storage import SQLiteStore
from docenrich.storage.snippets import ORDINALS_PER_QUERY, around_query
from tests.storeutil import pdf_bytes


def snip(sid: int, ordinal: int, doc: str = "d1", page: int | None = None, **changes) -> StoredSnippet:
    fields = dict(id=sid, document_id=doc, ordinal=ordinal, page=page or ordinal // 1000, bbox=None,
                  text=f"text {sid}", kind="text", meta={}, image_path=None, has_vector=True)
    return StoredSnippet(**{**fields, **changes})


WINDOW = [snip(i, 1000 * (1 + i // 3) + i % 3) for i in range(1, 10)]  # ids 1..9 over pages 1..4


def ids(snippets: list[StoredSnippet]) -> list[int]:
    return [s.id for s in snippets]


# --------------------------------------------------------------------------- neighbours in a window


def test_neighbours_are_the_n_either_side_in_reading_order():
    before, after = neighbours(WINDOW, 5, 2)
    assert ids(before) == [3, 4] and ids(after) == [6, 7]


def test_neighbours_stop_at_the_document_edges():
    assert [ids(x) for x in neighbours(WINDOW, 1, 3)] == [[], [2, 3, 4]]
    assert [ids(x) for x in neighbours(WINDOW, 9, 3)] == [[6, 7, 8], []]


def test_no_neighbours_for_a_snippet_not_in_the_window_or_none_asked():
    assert neighbours(WINDOW, 42, 2) == ([], [])
    assert neighbours(WINDOW, 5, 0) == ([], [])


class CountingStore:
    """A store whose snippets_around answers from a list of snippets and counts its calls."""

    def __init__(self, snippets: list[StoredSnippet]):
        self.snippets, self.calls = snippets, []

    def snippets_around(self, doc_id: str, ordinals, n: int) -> list[StoredSnippet]:
        self.calls.append((doc_id, sorted(ordinals), n))
        mine = sorted((s for s in self.snippets if s.document_id == doc_id), key=lambda s: s.ordinal)
        keep: set[int] = set()
        for ordinal in ordinals:
            at = next(i for i, s in enumerate(mine) if s.ordinal == ordinal)
            keep.update(s.id for s in mine[max(0, at - n) : at + n + 1])
        return [s for s in mine if s.id in keep]


def hit(rank: int, snippet: StoredSnippet) -> Hit:
    return Hit(rank, snippet, None, 1.0 / rank)


def test_one_store_query_per_document_among_the_hits():
    other = [snip(100 + i, 1000 + i, doc="d2") for i in range(4)]
    store = CountingStore(WINDOW + other)
    hits = [hit(1, WINDOW[4]), hit(2, other[0]), hit(3, WINDOW[8]), hit(4, WINDOW[5])]
    assert attach_neighbours(store, hits, 2) == 2
    assert sorted(store.calls) == [("d1", [2002, 3000, 4000], 2), ("d2", [1000], 2)]
    assert [(ids(h.before), ids(h.after)) for h in hits] == [
        ([3, 4], [6, 7]), ([], [101, 102]), ([7, 8], []), ([4, 5], [7, 8])]


def test_no_context_asked_means_no_query_and_the_size_is_bounded():
    store = CountingStore(WINDOW)
    hits = [hit(1, WINDOW[4])]
    assert attach_neighbours(store, hits, 0) == 0 and store.calls == [] and hits[0].before == []
    attach_neighbours(store, hits, 99)
    assert store.calls[0][2] == MAX_CONTEXT


# --------------------------------------------------------------------------- the store query


@pytest.fixture
def st(tmp_path: Path):
    s = SQLiteStore(tmp_path / "data")
    yield s
    s.close()


def store_pages(st, layout: dict[int, int], tag: str = "a") -> str:
    """A stored document with `layout[page]` snippets on each page (ordinals page * 1000 + i)."""
    doc, _ = st.add_document(pdf_bytes(tag), f"{tag}.pdf")
    st.begin_batches(doc.id, 1)
    st.save_batch(doc.id, 0, [Snippet(text=f"{tag} p{page} s{i}", page=page, bbox=(0, 0, 1, 1), document_id=doc.id,
                                      ordinal=page * 1000 + i) for page, count in layout.items() for i in range(count)])
    return doc.id


def texts(snippets: list[StoredSnippet]) -> list[str]:
    return [s.text.split(" ", 1)[1] for s in snippets]


def test_snippets_around_cross_pages_and_skip_pages_without_snippets(st):
    doc = store_pages(st, {1: 2, 2: 1, 4: 3, 5: 1})  # page 3 has none
    store_pages(st, {1: 5}, tag="b")  # another document's snippets never come in
    got = st.snippets_around(doc, [2000], 2)
    assert texts(got) == ["p1 s0", "p1 s1", "p2 s0", "p4 s0", "p4 s1"]
    both = st.snippets_around(doc, [1000, 5000], 1)
    assert texts(both) == ["p1 s0", "p1 s1", "p4 s2", "p5 s0"]
    overlapping = st.snippets_around(doc, [4000, 4001], 2)
    assert texts(overlapping) == ["p1 s1", "p2 s0", "p4 s0", "p4 s1", "p4 s2", "p5 s0"]
    assert st.snippets_around(doc, [], 2) == [] and texts(st.snippets_around(doc, [2000], 0)) == ["p2 s0"]


def test_snippets_around_many_ordinals_is_the_union_of_their_windows(st):
    doc = store_pages(st, {page: 2 for page in range(1, ORDINALS_PER_QUERY + 30)})
    wanted = [page * 1000 for page in range(1, ORDINALS_PER_QUERY + 30, 2)]
    every = st.snippets(doc)
    got = st.snippets_around(doc, wanted, 1)
    assert [s.ordinal for s in got] == sorted({every[i + d].ordinal for i, s in enumerate(every)
                                               if s.ordinal in wanted for d in (-1, 0, 1) if 0 <= i + d < len(every)})


def test_the_query_reads_a_range_per_side_of_each_ordinal():
    from sqlalchemy.dialects import sqlite

    compiled = around_query("d1", [7, 9], 2).compile(dialect=sqlite.dialect())
    sql = " ".join(str(compiled).split())
    assert sql.count("ORDER BY snippets.ordinal DESC LIMIT ?") == 2 and sql.count("ORDER BY snippets.ordinal LIMIT ?") == 2
    values = [compiled.params[key] for key in compiled.positiontup]
    # (SQLite's compiler gives each LIMIT inside the UNION an OFFSET 0.)
    assert [v for v in values if v != 0] == ["d1", 7, 2, "d1", 7, 3, "d1", 9, 2, "d1", 9, 3]


# --------------------------------------------------------------------------- breadcrumbs and presenters


def test_the_breadcrumb_is_the_title_then_the_heading_path():
    path = {"path": ["Harbours", "Breakwaters"], "heading": "Harbours › Breakwaters"}
    assert breadcrumb(snip(1, 1000, meta={**path, "title": "Coastal Notes"})) == ["Coastal Notes", "Harbours", "Breakwaters"]
    assert breadcrumb(snip(1, 1000, meta=path), "From the document") == ["From the document", "Harbours", "Breakwaters"]
    assert breadcrumb(snip(1, 1000, meta={"heading": "Only a heading"})) == ["Only a heading"]
    assert breadcrumb(snip(1, 1000)) == []


def result_with_context() -> SearchResult:
    found = Hit(1, WINDOW[4], None, 0.5)
    found.before, found.after = WINDOW[2:4], WINDOW[5:7]
    return SearchResult(query="q", k=10, document_id=None, embedder="", reranked=False, mode="lexical",
                        hits=[found], context=2)


def test_the_api_shows_each_neighbour_and_the_context_asked_for():
    from flask import Flask

    from docenrich.web import presenters
    from docenrich.web.api import api
    from docenrich.web.pages import pages
    from tests.unit.test_api_schema import conforms

    app = Flask("context")
    app.register_blueprint(api)
    app.register_blueprint(pages)
    with app.test_request_context():
        body = presenters.search_json(result_with_context())
    conforms("SearchResponse", body)
    (shown,) = body["results"]
    assert body["context"] == 2 and shown["ordinal"] == WINDOW[4].ordinal
    assert [n["snippet_id"] for n in shown["context_before"]] == [3, 4]
    assert shown["context_after"][0] == {"snippet_id": 6, "ordinal": 3000, "page": 3, "kind": "text", "text": "text 6"}


def test_the_command_line_prints_neighbours_around_their_result():
    from docenrich.cli.commands import hit_rows, table

    rows = hit_rows(result_with_context())
    assert [c["snippet_id"] for c in rows[0]["context_before"]] == [3, 4] and rows[0]["breadcrumb"] == []
    lines = table(rows)
    assert [line.split()[-2:] for line in lines[1:]] == [
        ["text", "3"], ["text", "4"], ["text", "5"], ["text", "6"], ["text", "7"]]
    assert [line.lstrip()[0] for line in lines[1:]] == ["↑", "↑", "1", "↓", "↓"]
    plain = hit_rows(SearchResult(query="q", k=10, document_id=None, embedder="", reranked=False,
                                  hits=[Hit(1, WINDOW[4], None, 0.5)]))
    assert "context_before" not in plain[0] and len(table(plain)) == 2
