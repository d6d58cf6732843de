"""The lexical index on both backends: identifier tokenisation, non-English text, kept in step with
snippets. (An old SQLite database getting its index is in tests/unit/test_sqlite_upgrades.py.)"""
from __future__ import annotations

import sqlite3

import pytest

from docenrich.records import Snippet
from docenrich.storage.sqlite.store import fts_query
from tests.storeutil import is_postgres, run_sql

TEXTS = [
    "Set the environment variable R_MAKEVARS_USER to point at a personal Makevars file.",
    "Call foo.bar() after the session starts, never before.",
    "Extract the archive with tar --no-same-owner so files belong to the current user.",
    "The user manual describes every variable of the environment in general terms.",
    "Die Größenänderung der Fenster erfolgt über das Menü Ansicht.",
    "Настройка переменных окружения описана в этой главе.",
    "Le paramètre « délai » règle l'attente avant la reconnexion.",
]


def snip(doc_id: str, i: int, text: str, kind: str = "text", heading: str | None = None) -> Snippet:
    return Snippet(text=text, page=i + 1, bbox=(0.0, 0.0, 1.0, 1.0), document_id=doc_id, ordinal=i, kind=kind,
                   meta={"heading": heading} if heading else {})


@pytest.fixture
def st(lexical_store):
    """Each test runs on SQLite (FTS5, and the shared word index it uses at scale) and on PostgreSQL (tsvector)."""
    return lexical_store


def index_sizes(st) -> tuple[int, int]:
    """(rows in the lexical index, snippets), read from the backend's own tables."""
    if is_postgres(st):
        row = run_sql(st, "SELECT count(*) FILTER (WHERE lex <> ''::tsvector) AS i, count(*) AS s FROM snippets")[0]
        return row["i"], row["s"]
    conn = sqlite3.connect(st.db_path)
    try:
        return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("snippets_fts", "snippets"))
    finally:
        conn.close()


def add_doc(st, tag: str, texts: list[str], **kw) -> str:
    doc, _ = st.add_document(f"%PDF-1.4\n% {tag}\n%%EOF\n".encode(), f"{tag}.pdf")
    st.begin_batches(doc.id, 1)
    st.save_batch(doc.id, 0, [snip(doc.id, i, t, **kw) for i, t in enumerate(texts)])
    return doc.id


def top_text(st, query: str, **kw) -> str | None:
    hits = st.lexical_search(query, 3, **kw)
    return st.get_snippet(hits[0][0]).text if hits else None


@pytest.mark.parametrize("query, expected", [
    ("R_MAKEVARS_USER", 0),
    ("what does r_makevars_user do", 0),
    ("MAKEVARS", 0),
    ("foo.bar()", 1),
    ("when may I call foo.bar", 1),
    ("--no-same-owner", 2),
    ("tar no-same-owner flag", 2),
    ("Größenänderung", 4),
    ("GROSSENANDERUNG", None),  # diacritics fold (ö → o), but ß is not "ss"
    ("grosenanderung menu", 4),
    ("ПЕРЕМЕННЫХ окружения", 5),
    ("parametre delai", 6),
    ("extracting archives", 2),  # words match by their stems: "extracting" finds "Extract"
    ("describing variables", 3),
])
def test_identifiers_and_non_english_text_are_found(st, query, expected):
    add_doc(st, "a", TEXTS)
    got = top_text(st, query)
    assert got == (None if expected is None else TEXTS[expected]), (query, fts_query(query))


def test_identifier_matches_as_a_unit_not_as_loose_words(st):
    add_doc(st, "a", TEXTS)
    hits = st.lexical_search("R_MAKEVARS_USER", 10)
    # "user" and "r" alone appear elsewhere; only the snippet with the identifier matches.
    assert [st.get_snippet(h[0]).text for h in hits] == [TEXTS[0]]
    assert fts_query("foo.bar()") == '"foo bar"'
    assert fts_query("--no-same-owner") == '"no same owner"'


def test_query_syntax_cannot_break_or_inject(st):
    add_doc(st, "a", TEXTS)
    for query in ['"', 'NEAR(a b)', 'text:foo', '*', 'a AND', '") OR ("', "^", "the of and"]:
        assert isinstance(st.lexical_search(query, 5), list)
    assert st.lexical_search("", 5) == []
    assert top_text(st, 'foo" OR "x') == TEXTS[1]


def test_index_follows_insert_update_and_delete(st):
    doc_id = add_doc(st, "a", TEXTS[:2])
    assert top_text(st, "R_MAKEVARS_USER") == TEXTS[0]
    # A re-extraction that changes a snippet's text replaces its indexed text.
    st.save_batch(doc_id, 0, [snip(doc_id, 0, "Now it talks about XDG_CONFIG_HOME instead.")])
    assert st.lexical_search("R_MAKEVARS_USER", 5) == []
    assert top_text(st, "XDG_CONFIG_HOME") == "Now it talks about XDG_CONFIG_HOME instead."
    other = add_doc(st, "b", ["Another XDG_CONFIG_HOME mention."])
    assert len(st.lexical_search("XDG_CONFIG_HOME", 5)) == 2
    assert st.delete_document(doc_id)
    hits = st.lexical_search("XDG_CONFIG_HOME", 5)
    assert [st.get_snippet(h[0]).document_id for h in hits] == [other]
    indexed, stored = index_sizes(st)
    assert indexed == stored == 1


def test_heading_and_title_are_indexed_but_not_shown(st):
    doc_id = add_doc(st, "a", ["Values are read once at start-up."], heading="Configuration of PROXY_TIMEOUT")
    hits = st.lexical_search("PROXY_TIMEOUT", 5)
    assert len(hits) == 1
    shown = st.get_snippet(hits[0][0])
    assert shown.text == "Values are read once at start-up." and shown.document_id == doc_id


def test_filters_by_document_and_kind(st):
    a = add_doc(st, "a", ["alpha SHARED_NAME text"])
    b = add_doc(st, "b", ["beta SHARED_NAME ........ 12"], kind="toc")
    assert len(st.lexical_search("SHARED_NAME", 5)) == 2
    only_b = st.lexical_search("SHARED_NAME", 5, document_id=b)
    assert [st.get_snippet(h[0]).document_id for h in only_b] == [b]
    no_toc = st.lexical_search("SHARED_NAME", 5, exclude_kinds={"toc"})
    assert [st.get_snippet(h[0]).document_id for h in no_toc] == [a]


def test_scores_are_higher_for_better_matches(st):
    add_doc(st, "a", ["environment variable", "environment variable environment variable environment",
                      "nothing relevant here"])
    hits = st.lexical_search("environment variable", 5)
    assert len(hits) == 2 and hits[0][1] >= hits[1][1]
