"""Heading paths: every snippet knows its chapter, section and topic; small sections of one topic
merge; a snippet never spans two topics. Pure extraction, no servers."""
from __future__ import annotations

import random

import pymupdf
import pytest

from docenrich.pdf import extract_snippets
from docenrich.pdf.structure import MINOR_REPEATS, Outline, Structure, norm_title
from docenrich.records import embedding_text
from tests.helpers.pdfs import build_pdf

SECTIONS = ("Description", "Usage", "Arguments", "Value", "Examples")
WORDS = "matrix vector column value result input output scalar option default element index".split()


def reference_pdf(topics: int = 40, seed: int = 7, outline: bool = True) -> tuple[bytes, list[str]]:
    """A function reference: a chapter heading, then help pages, each a large bold title and five
    short fixed sections, with a running header naming the first topic on the page."""
    rnd = random.Random(seed)
    names = [f"fn{i:03d}" for i in range(topics)]
    toc = [[1, "Function Reference", 1]]
    pages: list[list[tuple]] = []
    y = 1000.0

    def new_page():
        nonlocal y
        pages.append([])
        y = 80.0

    def line(text: str, size: float = 10, font: str = "helv", gap: float = 4.0):
        nonlocal y
        if y > 780:
            new_page()
        pages[-1].append(((60, y), text, size, font))
        y += size + gap

    new_page()
    line("Function Reference", size=20, font="hebo", gap=14)
    for name in names:
        if y > 640:
            new_page()
        toc.append([2, f"{name} Compute the {name} transform", len(pages)])
        y += 10
        line(f"{name}   Compute the {name} transform", size=14, font="hebo", gap=8)
        for section in SECTIONS:
            line(section, size=10, font="hebo", gap=3)
            body = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(8, 16)))
            line(f"{body} tag{name}", gap=6)

    def draw(number: int, lines: list[tuple]):
        def on(page):
            for point, text, size, font in lines:
                page.insert_text(point, text, fontsize=size, fontname=font)
            page.insert_text((60, 40), f"Reference manual   page {number}", fontsize=8)
        return on

    pdf = build_pdf(*(draw(n, lines) for n, lines in enumerate(pages, start=1)), size=(595, 842),
                    toc=toc if outline else None)
    return pdf, names


@pytest.fixture(scope="module")
def reference():
    return reference_pdf()


def _topic_tags(text: str, names: list[str]) -> set[str]:
    return {n for n in names if f"tag{n}" in text or f"{n} " in text + " "}


@pytest.mark.parametrize("outline", [True, False])
def test_every_snippet_carries_its_topic_and_never_spans_two(outline):
    data, names = reference_pdf(outline=outline)
    snippets = [s for s in extract_snippets(data, "doc", images=False) if s.kind == "text"]
    assert snippets
    for s in snippets:
        tags = {n for n in names if f"tag{n}" in s.text}
        assert len(tags) <= 1, f"page {s.page}: one snippet spans topics {sorted(tags)}: {s.text[:120]!r}"
        path = s.meta.get("path") or []
        if tags:
            (topic,) = tags
            assert any(topic in part for part in path), f"{topic} not in the path {path}"
            assert path[0] in ("Function Reference",), path
            assert topic in embedding_text(s).split("\n", 1)[0] or topic in s.text.split(" ", 1)[0]


def test_small_sections_of_one_topic_merge(reference):
    data, names = reference
    snippets = [s for s in extract_snippets(data, "doc", images=False) if s.kind == "text"]
    # Five sections of a dozen words each: one snippet per topic (two where a page break cuts it).
    per_topic = {n: sum(1 for s in snippets if f"tag{n}" in s.text) for n in names}
    assert max(per_topic.values()) <= 2, per_topic
    assert sum(per_topic.values()) < len(names) * 1.5
    merged = [s for s in snippets if sum(f in s.text for f in SECTIONS) >= 3]
    assert len(merged) >= len(names) // 2


def test_a_batch_that_starts_mid_document_knows_the_path(reference):
    data, names = reference
    whole = {(s.page, s.ordinal): s.meta.get("path") for s in extract_snippets(data, "doc", images=False)}
    with pymupdf.open(stream=data, filetype="pdf") as doc:
        last = doc.page_count
    later = extract_snippets(data, "doc", images=False, start_page=3, end_page=last)
    assert later
    for s in later:
        assert s.meta.get("path") == whole[(s.page, s.ordinal)], f"page {s.page}"


def test_without_an_outline_a_late_batch_still_finds_its_topic():
    data, names = reference_pdf(outline=False)
    later = [s for s in extract_snippets(data, "doc", images=False, start_page=3) if s.kind == "text"]
    first = later[0]
    tags = {n for n in names if f"tag{n}" in first.text}
    assert tags and any(next(iter(tags)) in p for p in first.meta["path"]), first.meta


def test_the_path_is_embedded_and_indexed_as_context(reference):
    data, _ = reference
    s = next(s for s in extract_snippets(data, "doc", images=False) if "Usage" in s.text and s.meta.get("path"))
    assert s.meta["heading"] == " › ".join(s.meta["path"])
    head = embedding_text(s).split("\n", 1)[0]
    assert s.meta["path"][-1] in head or s.meta["path"][-1] in s.text


def test_api_entries_in_code_type_are_topics():
    def entries(page):
        y = 80
        for name in ("alpha_fn", "beta_fn", "gamma_fn"):
            page.insert_text((60, y), f"{name} (x, y)", fontsize=12, fontname="cour")
            y += 18
            page.insert_text((80, y), f"Return the {name} of x and y, computed element by element.", fontsize=10)
            y += 28

    data = build_pdf(entries)
    snippets = extract_snippets(data, "doc", images=False)
    assert [s.meta["path"][-1] for s in snippets] == ["alpha_fn (x, y)", "beta_fn (x, y)", "gamma_fn (x, y)"]


def test_numbered_run_in_headings_open_topics():
    def headings(page):
        y = 80
        for number, name in enumerate(("digits", "exponent", "floor"), start=31):
            page.insert_text((60, y), f"3.6.{number} {name}", fontsize=10, fontname="hebo")
            page.insert_text((140, y), f"(x). Outputs the {name} of x in the given base.", fontsize=10)
            y += 40

    snippets = extract_snippets(build_pdf(headings), "doc", images=False)
    assert [s.meta["path"][-1] for s in snippets] == ["3.6.31 digits", "3.6.32 exponent", "3.6.33 floor"]


def test_outline_paths_follow_positions_on_the_page():
    outline = Outline([(1, 0.0), (3, 100.0), (3, 500.0)],
                      [("Intro",), ("Reference", "abs"), ("Reference", "acos")])
    assert outline.path_at(1, 50) == ("Intro",)
    assert outline.path_at(3, 50) == ("Intro",)
    assert outline.path_at(3, 95) == ("Reference", "abs")  # a few points above its heading line
    assert outline.path_at(4, 0) == ("Reference", "acos")


def test_fixed_and_repeated_sections_are_minor():
    s = Structure()
    assert s.heading("abs Absolute value", (14.0, True)) is True
    assert s.heading("Arguments", (10.0, True)) is False
    assert s.path() == ("abs Absolute value", "Arguments")
    assert s.topic_path() == ("abs Absolute value",)
    for _ in range(MINOR_REPEATS - 1):
        s.heading("Gotchas", (10.0, True))
    assert s.heading("Gotchas", (10.0, True)) is False
    assert s.heading("acos Arc cosine", (14.0, True)) is True
    assert s.path() == ("acos Arc cosine",)


def test_heading_numbers_and_case_do_not_matter():
    assert norm_title("15.3.3.19 Uipushtool") == norm_title("Uipushtool")
    assert norm_title("Chapter 17: Arithmetic") == "arithmetic"
    assert norm_title("See also:") == "see also"
    assert norm_title("civil law") == "civil law"


def test_a_running_header_names_the_topic_when_nothing_else_does():
    rnd = random.Random(3)

    def topic_page(topic: str):
        prose = " ".join(rnd.choice(WORDS) for _ in range(150))

        def draw(page):
            page.insert_text((60, 40), topic, fontsize=9)
            page.insert_textbox(pymupdf.Rect(60, 130, 540, 700), f"Plain prose about {topic}: {prose}", fontsize=10)
        return draw

    topics = ("matrix_power", "matrix_power", "matrix_power", "vector_norm", "vector_norm", "vector_norm")
    snippets = extract_snippets(build_pdf(*(topic_page(t) for t in topics)), "doc", images=False)
    for s in snippets:
        topic = "matrix_power" if "matrix_power" in s.text else "vector_norm"
        assert s.meta.get("path") == [topic], (s.page, s.meta)
        assert not s.text.startswith(topic + " " + topic)


def test_a_heading_that_repeats_its_outline_entry_is_not_a_level_of_its_own():
    s = Structure(Outline([(1, 0.0)], [("The base package", "abbreviate")]))
    s.at(1, 10.0)
    assert s.heading("abbreviate Abbreviate Strings", (14.0, True)) is True
    assert s.path() == ("The base package", "abbreviate")
    assert s.heading("Usage", (10.0, True)) is False
    assert s.path() == ("The base package", "abbreviate", "Usage")
