"""Snippets sized in the embedder's own tokens, headings carried, contents pages marked, tables as Markdown."""
from __future__ import annotations

import pymupdf
import pytest

from docenrich.config import BUNDLED_MODEL, load_settings
from docenrich.models.tokens import embedder_counter, token_counter
from docenrich.pdf import extract_snippets
from docenrich.records import embedding_text
from tests.helpers.env import corpus_file
from tests.helpers.pdfs import build_pdf, contents_pdf

GEOTOPO = "009-pdflatex-geotopo/GeoTopo-komprimiert.pdf"
MULTICOLUMN = "026-latex-multicolumn/multicolumn.pdf"
FOUR_PAGES = "004-pdflatex-4-pages/pdflatex-4-pages.pdf"


@pytest.fixture(scope="module")
def counter():
    c = embedder_counter(load_settings({}, embedder_model=BUNDLED_MODEL))
    assert c is not None, "the bundled model's tokenizer must load without the model"
    return c


def test_counter_reads_the_models_own_limit_and_tokens(counter):
    assert counter.max_tokens == 256 - 2  # sentence_bert_config.json max_seq_length minus [CLS]/[SEP]
    assert counter("hello world") == 2
    # Identifiers cost many word pieces: the word-count estimate undercounts them badly.
    assert counter("R_MAKEVARS_USER --no-same-owner") > 8
    assert counter("word " * 1000) == 1000, "no padding or truncation"
    assert token_counter("/nonexistent/model/folder") is None


def long_pdf() -> bytes:
    """A heading and a paragraph far longer than the model reads, dense with identifiers."""
    body = " ".join(f"Set OPT_{i}_LIMIT=--max-{i}-items (see foo.bar_{i}()) before the run." for i in range(120))

    def draw(page):
        page.insert_text((72, 80), "Configuring BUILD_CACHE_DIRECTORY and friends", fontsize=18)
        page.insert_textbox(pymupdf.Rect(72, 100, 540, 800), body, fontsize=7)

    return build_pdf(draw)


@pytest.mark.parametrize("source", ["long", GEOTOPO, MULTICOLUMN, FOUR_PAGES])
def test_embedded_text_never_exceeds_max_seq_length(counter, source):
    pdf = long_pdf() if source == "long" else corpus_file(source)
    sized = extract_snippets(pdf, images=False, target_tokens=1000, count_tokens=counter,
                             max_tokens=counter.max_tokens)
    longest = max(counter(embedding_text(s)) for s in sized if s.text)
    assert longest <= counter.max_tokens
    # The same PDF cut by the word estimate alone runs past the limit: the check has teeth.
    estimated = extract_snippets(pdf, images=False, target_tokens=1000)
    assert max(counter(embedding_text(s)) for s in estimated if s.text) > counter.max_tokens
    if source == "long":
        assert len(sized) > 3


def test_heading_and_title_lead_the_embedded_text_not_the_shown_text(counter):
    sn = extract_snippets(long_pdf(), images=False, count_tokens=counter, max_tokens=counter.max_tokens)
    later = [s for s in sn if "BUILD_CACHE_DIRECTORY" not in s.text]
    assert later, "the heading is in the first snippet only"
    for s in later:
        assert s.meta["heading"].startswith("Configuring BUILD_CACHE_DIRECTORY")
        assert embedding_text(s).startswith("Configuring BUILD_CACHE_DIRECTORY")
        assert not s.text.startswith("Configuring")
    geo = [s for s in extract_snippets(corpus_file(GEOTOPO), images=False, end_page=12) if s.kind == "text"]
    assert geo[0].meta.get("title") == "Geometrie und Topologie"
    assert all(embedding_text(s).startswith("Geometrie und Topologie") or "Geometrie und Topologie" in s.text
               for s in geo)


def test_contents_and_index_pages_are_their_own_kind():
    sn = extract_snippets(contents_pdf(), images=False)
    assert {s.page for s in sn if s.kind == "toc"} == {1, 3}
    assert {s.kind for s in sn if s.page == 2} == {"text"}
    geo = extract_snippets(corpus_file(GEOTOPO), images=False)
    assert sorted({s.page for s in geo if s.kind == "toc"}) == [4, 115, 116, 117]


def test_tables_become_markdown_snippets_with_box_and_image():
    path = corpus_file(MULTICOLUMN)
    sn = extract_snippets(path)
    tables = [s for s in sn if s.kind == "table"]
    assert len(tables) == 1
    t = tables[0]
    lines = t.text.splitlines()
    assert lines[0] == "|Country|Population (millions)|Area (km2)|Capital|Official Language|"
    assert lines[1].startswith("|---|") and "|Austria|8.9|83,879|Vienna|German|" in lines
    assert t.image is not None and t.image.size[0] > 100
    with pymupdf.open(path) as doc:
        page = doc[t.page - 1]
        clip = page.get_text(clip=pymupdf.Rect(t.bbox))
    assert "Austria" in clip and "Finland" in clip
    # The table's cells are not repeated as loose text snippets.
    assert not any("83,879" in s.text for s in sn if s.kind == "text")


def test_a_grid_ruled_both_ways_needs_no_layout_model(monkeypatch):
    from docenrich.pdf import tables

    calls = []
    real = tables._layout_tables
    monkeypatch.setattr(tables, "_layout_tables", lambda page: calls.append(page.number) or real(page))
    with pymupdf.open(corpus_file("011-google-doc-document/google-doc-document.pdf")) as doc:
        grid = tables.find_tables(doc[0], "layout")
    assert [t.markdown.count("\n") for t in grid] == [5] and calls == [], (grid, calls)
    # Rules drawn only across the page (booktabs): the line finder sees no cells, the model does.
    with pymupdf.open(corpus_file(MULTICOLUMN)) as doc:
        assert tables.find_tables(doc[2], "lines") == []
        booktabs = tables.find_tables(doc[2], "layout")
    assert len(booktabs) == 1 and "|Austria|8.9|83,879|Vienna|German|" in booktabs[0].markdown
    assert calls == [2]
