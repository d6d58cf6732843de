"""Search filters as values and as SQL, request limits, and per-page ordinals: pure logic, no servers."""
from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from docenrich.filters import (
    MAX_COLLECTIONS,
    SearchFilter,
    build_filter,
    like_pattern,
    parse_date,
    parse_pages,
)
from docenrich.pdf.extract import MAX_SNIPPETS_PER_PAGE, _capped
from docenrich.search import search_filter
from docenrich.storage.filters import snippet_conditions
from docenrich.storage.tables import snippets


def test_pages_dates_and_globs_parse_or_say_why():
    assert parse_pages("5") == (5, 5) and parse_pages("5-9") == (5, 9)
    assert parse_pages("5-") == (5, None) and parse_pages("-9") == (None, 9) and parse_pages("") == (None, None)
    for bad in ("x", "0", "9-5", "1-2-3"):
        with pytest.raises(ValueError):
            parse_pages(bad)
    assert parse_date("2026-01-31", "d") == 1769817600.0
    assert parse_date("2026-01-31", "d", end_of_day=True) == 1769817600.0 + 86400
    assert parse_date("2026-01-31T01:00:00+01:00", "d") == 1769817600.0
    with pytest.raises(ValueError, match="ISO date"):
        parse_date("31/01/2026", "uploaded_after")
    assert like_pattern("a_b%c*?.pdf") == "a\\_b\\%c%_.pdf"


def test_requests_name_at_most_twenty_collections():
    build_filter(collections=[f"c{i}" for i in range(MAX_COLLECTIONS)])
    with pytest.raises(ValueError, match="At most 20 collections"):
        build_filter(collections=[f"c{i}" for i in range(100_000)])
    with pytest.raises(ValueError, match="before"):
        build_filter(uploaded_after="2026-02-01", uploaded_before="2026-01-01")


def test_a_search_hides_tables_of_contents_unless_asked():
    assert search_filter(None).excluded == ("toc",)
    assert search_filter(None, include_kinds={"toc"}).excluded == ()
    assert search_filter(build_filter(kinds=["toc"])).excluded == ()
    narrowed = search_filter(build_filter(collections=["a", "b"]), collections=["b", "c"], document_id="d1")
    assert narrowed.collections == ("b",) and narrowed.document_ids == ("d1",)
    assert SearchFilter(document_ids=("x",)).within_document("y").document_ids == ()


def _rows(f: SearchFilter) -> list[int]:
    conn = sqlite3.connect(":memory:")
    conn.executescript("""
        CREATE TABLE documents (id TEXT, filename TEXT, created_at REAL);
        CREATE TABLE document_collections (document_id TEXT, collection TEXT);
        CREATE TABLE snippets (id INTEGER, document_id TEXT, kind TEXT, page INTEGER);
        INSERT INTO documents VALUES ('d1', 'Guide_v1.pdf', 100), ('d2', 'notes.pdf', 200);
        INSERT INTO document_collections VALUES ('d1', 'a'), ('d2', 'b');
        INSERT INTO snippets VALUES (1, 'd1', 'text', 1), (2, 'd1', 'toc', 2), (3, 'd2', 'table', 3),
                                    (4, 'd2', 'text', 4);
    """)
    engine = sa.create_engine("sqlite://", creator=lambda: conn, poolclass=sa.pool.StaticPool)
    with engine.connect() as c:
        return list(c.scalars(sa.select(snippets.c.id).where(*snippet_conditions(f)).order_by(snippets.c.id)))


def test_each_condition_becomes_sql():
    assert _rows(SearchFilter()) == [1, 2, 3, 4]
    assert _rows(search_filter(None)) == [1, 3, 4]
    assert _rows(SearchFilter(collections=("b",))) == [3, 4]
    assert _rows(SearchFilter(collections=())) == []
    assert _rows(SearchFilter(document_ids=("d1",))) == [1, 2]
    assert _rows(SearchFilter(kinds=("table", "toc"))) == [2, 3]
    assert _rows(build_filter(pages="2-3")) == [2, 3]
    assert _rows(build_filter(filename="guide_*")) == [1, 2]  # case-insensitive, _ literal
    assert _rows(build_filter(filename="guide?v1.pdf")) == [1, 2]
    assert _rows(build_filter(filename="guidexv1*")) == []
    assert _rows(SearchFilter(uploaded_after=150.0)) == [3, 4]
    assert _rows(SearchFilter(uploaded_before=150.0, collections=("a", "b"))) == [1, 2]


def test_a_crowded_page_keeps_its_ordinals_below_the_next_page():
    pieces, figures, tables = ["p"] * 990, ["f"] * 30, ["t"] * 40
    kept = _capped(7, pieces, figures, tables)
    assert sum(map(len, kept)) == MAX_SNIPPETS_PER_PAGE
    assert kept[0] == pieces and len(kept[2]) == 9 and kept[1] == []
    assert _capped(7, ["p"] * 3, ["f"], ["t"]) == (["p"] * 3, ["f"], ["t"])
