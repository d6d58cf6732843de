"""Tests of docenrich.pdf on the shared wild-PDF corpus and on generated PDFs. (Hostile bytes and
the limits of inspect_pdf are in test_pdf_hostile.py.)"""
from __future__ import annotations

import io
import pickle
import re
import shutil
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pymupdf
import pytest
from PIL import Image

from docenrich.pdf import (
    PDFError,
    Snippet,
    chunking,
    extract_snippets,
    headers,
    inspect_pdf,
    iter_snippet_batches,
    layout,
    render_page_thumbnail,
)
from docenrich.pdf import text as pdf_text
from tests.helpers.env import CORPUS, corpus_file
from tests.helpers.pdfs import build_pdf

HAS_TESSERACT = shutil.which("tesseract") is not None

# Phrases read from each file (with pymupdf): they must appear in the snippets' text.
# Table-of-contents and index pages, checked by eye; every other page of the corpus is not one.
TOC_PAGES: dict[str, list[int]] = {"009-pdflatex-geotopo/GeoTopo-komprimiert.pdf": [4, 115, 116, 117]}
WITH_TABLES = {"011-google-doc-document/google-doc-document.pdf", "026-latex-multicolumn/multicolumn.pdf"}

PHRASES: dict[str, list[str]] = {
    "001-trivial/minimal-document.pdf": ["Lorem ipsum dolor sit amet", "no sea takimata sanctus est"],
    "002-trivial-libre-office-writer/002-trivial-libre-office-writer.pdf": [
        "consetetur sadipscing elitr", "Stet clita kasd gubergren"],
    "003-pdflatex-image/pdflatex-image.pdf": ["Your Chapter", "Stet clita kasd gubergren"],
    "004-pdflatex-4-pages/pdflatex-4-pages.pdf": ["Hello, here is some text without a meaning",
                                                  "Huardest gefburn", "Kjift – not at all!"],
    "006-pdflatex-outline/pdflatex-outline.pdf": ["Contents", "Hello, here is some text without a meaning"],
    "008-reportlab-inline-image/inline-image.pdf": ["Test"],
    "009-pdflatex-geotopo/GeoTopo-komprimiert.pdf": [
        "Geometrie und Topologie", "Dieses Skript wurde im Wintersemester 2013/2014",
        "Ein topologischer Raum X heißt hausdorffsch", "Topologische Räume"],
    "010-pdflatex-forms/pdflatex-forms.pdf": ["Name", "Submit"],
    "011-google-doc-document/google-doc-document.pdf": ["Beautiful is better than ugly", "Readability counts"],
    "012-libreoffice-form/libreoffice-form.pdf": ["Example for a Form", "Nationality"],
    "013-reportlab-overlay/reportlab-overlay.pdf": ["Fingerprint: asdfSa2123", "Name: Foo Bar"],
    "014-outlines/mistitled_outlines_example.pdf": ["Hello, here is some text without a meaning"],
    "015-arabic/habibi.pdf": ["habibi", "حَبيبي"],
    "015-arabic/habibi-oneline-cmap.pdf": ["habibi", "حَبيبي"],
    "015-arabic/habibi-rotated.pdf": ["habibi", "حَبيبي"],
    "016-libre-office-link/libre-office-link.pdf": ["This is a link to an awesome blog"],
    "018-base64-image/base64image.pdf": ["Produced with a Trial Version of PDF Annotator"],
    "020-xmp/output_with_metadata_pymupdf.pdf": ["Hello, World!"],
    "021-pdfa/crazyones-pdfa.pdf": ["The Crazy Ones", "The misfits", "see things differently"],
    "022-pdfkit/pdfkit.pdf": ["Foo: bar", "ABC: DEF"],
    "024-annotations/annotated_pdf.pdf": ["Some text.", "Not highlighted"],
    "025-attachment/with-attachment.pdf": ["Lorem ipsum dolor sit amet"],
    "026-latex-multicolumn/multicolumn.pdf": ["Two-Column Document with Lorem Ipsum",
                                              "Table 1: EU Countries Information", "Copenhagen"],
}
ERRORS = {
    "005-libreoffice-writer-password/libreoffice-writer-password.pdf": "encrypted",
    "017-unreadable-meta-data/unreadablemetadata.pdf": "empty",
}
IMAGE_ONLY_DIRS = ("007-imagemagick-images/", "019-grayscale-image/", "023-cmyk-image/")
WITH_FIGURES = {"003-pdflatex-image/pdflatex-image.pdf", "011-google-doc-document/google-doc-document.pdf",
                "018-base64-image/base64image.pdf", "008-reportlab-inline-image/inline-image.pdf"}


def corpus_files() -> list[str]:
    if not CORPUS.is_dir():
        return []
    return sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.pdf"))


@lru_cache(maxsize=None)
def extracted(rel: str, **options) -> tuple[Snippet, ...]:
    """Extraction results cached per file: GeoTopo (117 pages) is extracted once."""
    return tuple(extract_snippets(corpus_file(rel), document_id="doc-" + rel.split("/")[0], **options))


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def check_invariants(sn: list[Snippet] | tuple[Snippet, ...], pdf: Path | bytes) -> None:
    """Invariants that every extraction result must satisfy."""
    doc = pymupdf.open(pdf) if isinstance(pdf, Path) else pymupdf.open(stream=pdf, filetype="pdf")
    ordinals = [s.ordinal for s in sn]
    assert len(set(ordinals)) == len(ordinals), "ordinals must be unique"
    assert ordinals == sorted(ordinals), "snippets come in ordinal (reading) order"
    for s in sn:
        assert s.kind in ("text", "figure", "page", "ocr", "toc", "table")
        assert 1 <= s.page <= doc.page_count
        assert s.ordinal // 1000 == s.page, "ordinal = page * 1000 + index"
        rect = doc[s.page - 1].rect
        x0, y0, x1, y1 = s.bbox
        assert x0 <= x1 and y0 <= y1
        assert rect.x0 - 1 <= x0 and rect.y0 - 1 <= y0 and x1 <= rect.x1 + 1 and y1 <= rect.y1 + 1, (s.bbox, rect)
        if s.kind == "table":
            assert s.text.startswith("|") and "\n|---" in s.text and s.image is not None
        if s.kind in ("text", "ocr", "toc"):
            assert s.text.strip()
            assert "  " not in s.text and "\n" not in s.text
        if s.kind == "page":
            assert s.text == "" and s.image is not None


# ------------------------------------------------------------------ corpus

@pytest.mark.parametrize("rel", corpus_files() or ["<corpus missing>"])
def test_corpus_file(rel: str):
    path = corpus_file(rel)
    if rel in ERRORS:
        with pytest.raises(PDFError) as err:
            extract_snippets(path)
        assert err.value.code == ERRORS[rel]
        assert str(err.value) == err.value.message and len(err.value.message) > 10
        with pytest.raises(PDFError) as err2:
            inspect_pdf(path.read_bytes())
        assert err2.value.code == ERRORS[rel]
        return
    sn = extracted(rel)
    assert sn, "never a silent empty result"
    check_invariants(sn, path)
    text = norm(" ".join(s.text for s in sn))
    for phrase in PHRASES.get(rel, []):
        assert phrase in text, f"{phrase!r} missing from {rel}: {text[:300]!r}"
    if rel.startswith(IMAGE_ONLY_DIRS):
        kinds = {s.kind for s in sn}
        if HAS_TESSERACT:
            assert kinds <= {"ocr", "page"}, kinds
        else:
            assert kinds == {"page"}, kinds
        for s in sn:
            if s.kind == "page":
                assert s.meta.get("no_text_layer") is True
        assert len({s.page for s in sn}) == pymupdf.open(path).page_count, "one snippet per scanned page"
    elif rel in PHRASES:
        assert {s.kind for s in sn} <= {"text", "figure", "toc", "table"}
        assert sorted({s.page for s in sn if s.kind == "toc"}) == TOC_PAGES.get(rel, [])
        assert bool([s for s in sn if s.kind == "table"]) == (rel in WITH_TABLES)
    if rel in WITH_FIGURES:
        figs = [s for s in sn if s.kind == "figure"]
        assert figs and all(f.image is not None and f.image.size[0] > 20 for f in figs)
    # Pickle round trip: images come back as PIL images, bytes stay bounded.
    sizes = []
    for s in sn:
        blob = pickle.dumps(s)
        sizes.append(len(blob))
        back = pickle.loads(blob)
        assert back.text == s.text and back.bbox == s.bbox and back.ordinal == s.ordinal
        if s.image is not None:
            assert isinstance(back.image, Image.Image) and back.image.size == s.image.size
            assert max(back.image.size) <= 1024
            raw = s.image.size[0] * s.image.size[1] * len(s.image.getbands())
            assert len(blob) < raw + len(s.text.encode()) + 2000, "pickle must carry encoded bytes, not pixels"
    assert max(sizes) < 400_000
    assert sum(sizes) / len(sizes) < 80_000


def test_geotopo_layout_quality():
    rel = "009-pdflatex-geotopo/GeoTopo-komprimiert.pdf"
    sn = extracted(rel)
    assert len({s.page for s in sn}) == 117
    text = " ".join(s.text for s in sn)
    # Running header "1.2. METRISCHE RÄUME" (with the page number) is dropped; the
    # section heading in the body ("1.2 Metrische Räume") stays.
    assert "METRISCHE RÄUME" not in text
    assert "1.2 Metrische Räume" in text
    # Ligature "ﬀ" expanded, no compatibility characters left.
    assert "hausdorffsch" in text and "\ufb00" not in text and "\ufb01" not in text
    # Chunk sizes near the target: ~300 tokens, at most a bit over.
    words = [len(s.text.split()) for s in sn if s.kind == "text"]
    assert max(words) <= 300 and np.median(words) > 20
    headed = [s for s in sn if s.meta.get("heading")]
    assert len(headed) > len(sn) / 2
    assert any(s.text.startswith("Definition 2 Sei") for s in sn), "a heading starts its snippet"


def test_multicolumn_reading_order():
    path = corpus_file("026-latex-multicolumn/multicolumn.pdf")
    sn = extract_snippets(path, overlap_tokens=0)
    page1 = norm(" ".join(s.text for s in sn if s.page == 1))
    # The left column's first paragraph, read with plain PyMuPDF, must come out contiguous.
    doc = pymupdf.open(path)
    left = [b for b in doc[0].get_text("blocks") if b[2] < 305 and b[4].startswith("Lorem ipsum")][0][4]
    left = re.sub(r"-\n(?=[a-z])", "", left).replace("\n", " ")
    left_words = norm(left).split()
    assert len(left_words) > 60
    assert " ".join(left_words[:60]) in page1
    # Column order: left column to its end, then the right column from its top.
    i_left_end = page1.index("Vivamus viverra fermentum felis. Donec nonummy")
    i_right_top = page1.index("pellentesque ante. Phasellus adipiscing semper elit.")
    i_right_next = page1.index("Quisque ullamcorper placerat ipsum")
    assert page1.index("Lorem ipsum dolor sit amet, consectetuer adipiscing elit.") < i_left_end < i_right_top < i_right_next
    # A snippet stays inside one column: its bbox is at most a column wide.
    for s in sn:
        if s.page in (1, 2) and s.kind == "text" and s.bbox[1] > 240:
            assert s.bbox[2] - s.bbox[0] < 250, s.bbox
    # The page number at the bottom is not text.
    assert not re.search(r"\b[123]$", norm(" ".join(s.text for s in sn)))


def test_arabic_rotated_pages_upright_and_logical():
    path = corpus_file("015-arabic/habibi-rotated.pdf")
    doc = pymupdf.open(path)
    sn = extract_snippets(path)
    assert [s.page for s in sn] == [1, 2, 3, 4]
    for s in sn:
        assert "حَبيبي" in s.text and "\ufffd" not in s.text and "\x03" not in s.text
        # The word starts with HAH (logical order), not YEH (reversed visual order).
        assert s.text.index("\u062d") < s.text.index("\u064a")
        assert s.image.size[0] > 2 * s.image.size[1], "the line is rendered upright on rotated pages"
        r = doc[s.page - 1].rect
        assert pymupdf.Rect(s.bbox) in r + (-1, -1, 1, 1)


def test_visual_order_arabic_is_reversed_to_logical():
    # "مرحبا" written in visual order with presentation forms (as some producers do).
    visual = "\ufe8e\ufe92\ufea4\ufeae\ufee3"
    cleaned = pdf_text._clean_text(visual)
    assert cleaned == "مرحبا"
    assert pdf_text._clean_text("\ufee3\ufeae\ufea4\ufe92\ufe8e") == "مرحبا"  # already logical: untouched


def test_text_cleanup_units():
    assert pdf_text._clean_text("e\ufb03cient \ufb01le") == "efficient file"
    assert pdf_text._clean_text("x\u00b2 \u00bd") == "x\u00b2 \u00bd", "NFKC only on compatibility blocks"
    assert pdf_text._clean_text("a\u00a0b\u2003c") == "a b c"
    assert pdf_text._clean_text("zero\u200bwidth\ufffd") == "zerowidth"


def test_page_number_pattern():
    for folio in ("12", "- 12 -", "Page 3 of 10", "Seite 3 von 10", "iv", "xii", "(7)"):
        assert headers._PAGE_NUM_RE.match(folio), folio
    for text in ("mild", "did", "civil", "Intro", "12 apples"):
        assert not headers._PAGE_NUM_RE.match(text), text


# --------------------------------------------------------- synthetic documents

def _report_pdf() -> bytes:
    """5 pages: running header, 'Page N of 5' footers, hyphenated words, ligatures."""
    lig = pymupdf.Font("cjk")  # ships with PyMuPDF and has the ﬁ/ﬂ glyphs

    def report_page(page, i: int):
        page.insert_font(fontname="lig", fontbuffer=lig.buffer)
        page.insert_text((72, 40), "ACME Quarterly Report - Confidential", fontsize=9)
        page.insert_text((72, 90), f"Section {i} overview", fontsize=16, fontname="hebo")
        topic = ["budget", "hiring", "roadmap", "security", "travel"][i - 1]
        body = [
            f"This page covers {topic}. The committee reviewed the exam-",
            "ple carefully and found that the infra-",
            f"structure needs more work before the {topic}",
            "release. Everyone agreed on the schedule.",
        ]
        y = 120
        for line in body:
            page.insert_text((72, y), line, fontsize=11)
            y += 14
        page.insert_text((72, y), "The \ufb01nal of\ufb01ce \ufb02oor plan is ready.", fontsize=11, fontname="lig")
        page.insert_text((280, 800), f"Page {i} of 5", fontsize=9)

    return build_pdf(*(lambda page, i=i: report_page(page, i) for i in range(1, 6)))


def test_generated_report_headers_hyphens_ligatures():
    data = _report_pdf()
    sn = extract_snippets(data, document_id="rep")
    check_invariants(sn, data)
    assert [s.page for s in sn] == [1, 2, 3, 4, 5]
    for s in sn:
        assert "ACME" not in s.text and "Confidential" not in s.text, s.text
        assert not re.search(r"Page \d of 5", s.text), s.text
        assert "example carefully" in s.text and "exam-" not in s.text
        assert "infrastructure needs" in s.text
        assert "final office floor plan" in s.text, s.text
        assert s.text.startswith(f"Section {s.page} overview"), "the heading stays with its text"
        assert s.meta.get("heading") == f"Section {s.page} overview"
        assert s.document_id == "rep" and s.ordinal == s.page * 1000


def test_single_page_keeps_its_margin_text():
    # With no other page to compare, nothing repeats: the top line is content.
    data = build_pdf(lambda page: page.insert_text((72, 40), "Only line near the top edge", fontsize=11))
    sn = extract_snippets(data)
    assert [s.text for s in sn] == ["Only line near the top edge"]


def test_chunking_target_overlap_and_words():
    words = [f"word{i:03d}" for i in range(600)]
    data = build_pdf(" ".join(words), box=(50, 50, 545, 800), fontsize=7)
    sn = extract_snippets(data, target_tokens=100, overlap_tokens=20)
    assert len(sn) >= 5
    seen: list[str] = []
    for s in sn:
        toks = s.text.split()
        assert all(re.fullmatch(r"word\d{3}", t) for t in toks), "never split mid-word"
        assert chunking._estimate_tokens(s.text) <= 100 * 1.05
        seen.extend(toks)
    assert set(seen) == set(words)
    # Consecutive snippets cut inside one paragraph share a short overlap.
    a, b = sn[0].text.split(), sn[1].text.split()
    assert b[0] in a and 3 <= len(a) - a.index(b[0]) <= 16
    no_overlap = extract_snippets(data, target_tokens=100, overlap_tokens=0)
    assert sum(len(s.text.split()) for s in no_overlap) == 600


def _scan_pdf(rotate: int = 0) -> bytes:
    """A page that is only a picture of text, like a scan; `rotate` stores it sideways + /Rotate."""
    def text(page):
        page.insert_text((20, 80), "Invoice number 4711", fontsize=28)
        page.insert_text((20, 140), "Total amount due today", fontsize=28)

    with pymupdf.open(stream=build_pdf(text, size=(400, 200)), filetype="pdf") as src:
        picture = src[0].get_pixmap(dpi=200, colorspace=pymupdf.csGRAY).tobytes("png")

    def scan(page):
        page.insert_image(page.rect, stream=picture, rotate=rotate)
        page.set_rotation(rotate)

    return build_pdf(scan, size=(200, 400) if rotate in (90, 270) else (400, 200))


def test_scanned_page_ocr_or_page_image():
    data = _scan_pdf()
    assert not inspect_pdf(data).has_text_layer
    sn = extract_snippets(data)
    check_invariants(sn, data)
    if HAS_TESSERACT:
        assert {s.kind for s in sn} == {"ocr"}
        text = " ".join(s.text for s in sn)
        assert "Invoice" in text and "4711" in text
        assert all(s.image is not None for s in sn)
    else:
        assert [s.kind for s in sn] == ["page"]
    sn = extract_snippets(data, ocr=False)
    assert [(s.kind, s.text, s.meta) for s in sn] == [("page", "", {"no_text_layer": True})]
    assert sn[0].image.size[0] > 300


@pytest.mark.skipif(not HAS_TESSERACT, reason="tesseract is not installed")
@pytest.mark.parametrize("rotate", [90, 270])
def test_rotated_scan_is_read_upright(rotate: int):
    data = _scan_pdf(rotate)
    sn = extract_snippets(data)
    check_invariants(sn, data)
    assert [s.kind for s in sn] == ["ocr"]
    assert "Invoice number 4711" in sn[0].text
    w, h = sn[0].image.size
    assert w > 2 * h, "the OCR snippet image is upright (wide lines), not sideways"
    page = extract_snippets(data, ocr=False)[0]
    assert page.image.size[0] > page.image.size[1], "page images are shown as displayed"


def test_batches_progress_and_page_ranges():
    path = corpus_file("009-pdflatex-geotopo/GeoTopo-komprimiert.pdf")
    calls: list[tuple[int, int]] = []
    batches = list(iter_snippet_batches(path, "g", start_page=10, end_page=14, batch_pages=2,
                                        progress=lambda d, t: calls.append((d, t))))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert [sorted({s.page for s in b}) for b in batches] == [[10, 11], [12, 13], [14]]
    # Re-extracting a page range gives the same snippets as the full run.
    full = [s for s in extracted("009-pdflatex-geotopo/GeoTopo-komprimiert.pdf") if 10 <= s.page <= 14]
    part = [s for b in batches for s in b]
    assert [(s.ordinal, s.text) for s in part] == [(s.ordinal, s.text) for s in full]


def test_broken_page_does_not_kill_document(monkeypatch):
    path = corpus_file("004-pdflatex-4-pages/pdflatex-4-pages.pdf")
    real = layout._parse_dict

    def flaky(page, d, number, rotated_space):
        if number == 2:
            raise RuntimeError("synthetic MuPDF failure")
        return real(page, d, number, rotated_space)

    monkeypatch.setattr(layout, "_parse_dict", flaky)
    sn = extract_snippets(path)
    pages = {s.page: s.kind for s in sn}
    assert pages[1] == pages[3] == pages[4] == "text"
    bad = [s for s in sn if s.page == 2]
    assert len(bad) == 1 and bad[0].kind == "page" and "synthetic" in bad[0].meta["error"]


def test_hostile_page_with_thousands_of_objects_is_capped(monkeypatch, caplog):
    rng = np.random.default_rng(3)

    def scattered(page):
        writer = pymupdf.TextWriter(page.rect)
        for i in range(2500):  # scattered one-word text objects
            writer.append((rng.uniform(20, 560), rng.uniform(20, 820)), f"w{i}", fontsize=4)
        writer.write_text(page)

    data = build_pdf(scattered)
    monkeypatch.setattr(layout, "MAX_SPANS_PER_PAGE", 300)
    t0 = time.perf_counter()
    with caplog.at_level("WARNING", logger="docenrich.pdf"):
        sn = extract_snippets(data)
    assert time.perf_counter() - t0 < 10
    assert sn and sum(len(s.text.split()) for s in sn) <= 300
    assert any("text spans" in r.getMessage() for r in caplog.records)


def test_images_off_and_thumbnail():
    path = corpus_file("001-trivial/minimal-document.pdf")
    sn = extract_snippets(path, images=False)
    assert sn and all(s.image is None and s.image_bytes() is None for s in sn)
    png = render_page_thumbnail(path, 1, width=240)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size[0] == 240
    with pytest.raises(ValueError):
        render_page_thumbnail(path, 2)


# ------------------------------------------------------------------- Snippet

def test_snippet_user_construction_and_pickle():
    img = Image.new("RGB", (300, 120), "white")
    for x in range(10, 290, 7):
        img.putpixel((x, 60), (0, 0, 0))
    s = Snippet(text="hello", image=img, page=2, bbox=(1, 2, 3, 4), document_id="d", ordinal=2001,
                embedding=np.arange(4, dtype=np.float32), embedding_model="m", meta={"heading": "H"})
    assert s.image is img
    enc = s.image_bytes()
    assert enc is s.image_bytes(), "encoded at most once"
    data, fmt = enc
    assert fmt in ("png", "webp", "jpeg") and Image.open(io.BytesIO(data)).size == (300, 120)
    blob = pickle.dumps(s)
    assert len(blob) < 300 * 120  # far below the raw pixels
    back = pickle.loads(blob)
    assert isinstance(back.image, Image.Image) and back.image.size == (300, 120)
    assert back.text == "hello" and back.page == 2 and back.bbox == (1, 2, 3, 4) and back.meta == {"heading": "H"}
    assert np.array_equal(back.embedding, s.embedding) and back.embedding_model == "m"
    assert back == s
    # Setting a new image invalidates the cached encoding.
    back.image = Image.new("L", (10, 10), 255)
    assert Image.open(io.BytesIO(back.image_bytes()[0])).size == (10, 10)
    plain = Snippet(text="x")
    assert plain.image is None and plain.image_bytes() is None and plain.kind == "text" and plain.meta == {}
    assert pickle.loads(pickle.dumps(plain)) == plain
    with pytest.raises(TypeError):
        Snippet(image=b"not an image")
