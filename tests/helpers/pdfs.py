"""The PDF builder of the tests, and the documents built with it.

build_pdf() makes every generated PDF: one page per item, a string set as a text box, a callable
drawing on its page. The named builders below are the documents several tests share.
"""
from __future__ import annotations

import os
import random
import re
import zlib
from collections.abc import Callable

import pymupdf

TEXT_BOX = (72, 72, 520, 770)
WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
    "upsilon phi chi psi omega river stone lantern copper meadow harbor violet signal marble orchard"
).split()

Page = str | Callable[[pymupdf.Page], object]


def build_pdf(*pages: Page, box: tuple = TEXT_BOX, fontsize: float = 11, size: tuple | None = None,
              metadata: dict | None = None, toc: list | None = None, garbage: int = 0) -> bytes:
    """A PDF of one page per item: a string is set as a text box in `box`, a callable draws on the
    new page. `size` is (width, height) of every page (A4 by default); `metadata` and `toc`
    (pymupdf's [level, title, page] rows) are set on the document."""
    doc = pymupdf.open()
    try:
        for content in pages:
            page = doc.new_page(width=size[0], height=size[1]) if size else doc.new_page()
            if callable(content):
                content(page)
            else:
                page.insert_textbox(pymupdf.Rect(box), content, fontsize=fontsize)
        if metadata:
            doc.set_metadata(metadata)
        if toc:
            doc.set_toc(toc)
        return doc.tobytes(garbage=garbage)
    finally:
        doc.close()


def pdf_with_text(*paragraphs: str, fontsize: float = 11) -> bytes:
    """A small PDF, one paragraph per page."""
    return build_pdf(*paragraphs, fontsize=fontsize)


def text_pdf(pages: int, seed: int = 0, sections: int = 4, words: int = 90) -> bytes:
    """A PDF of `pages` pages of distinct pseudo-random prose (seeded, so reproducible)."""
    rnd = random.Random(seed)
    texts = [
        "\n\n".join(
            f"Section {seed}.{number + 1}.{k}: " + " ".join(rnd.choice(WORDS) for _ in range(words))
            for k in range(sections)
        )
        for number in range(pages)
    ]
    return build_pdf(*texts, box=(60, 60, 540, 780), fontsize=10)


def table_pdf(pages: int, seed: int = 3) -> bytes:
    """A PDF of `pages` pages, each a table ruled only horizontally (booktabs style, which only
    PyMuPDF's layout model finds) and a line of prose."""
    rnd = random.Random(seed)

    def table(n: int):
        def draw(page):
            page.insert_text((60, 90), f"Table {n + 1}: measurements of run {n + 1}", fontsize=12, fontname="hebo")
            top, rows = 120, 8
            for r in range(rows):
                cells = ["Sample", "Mass", "Volume", "Density"] if r == 0 else \
                    [f"s{n}-{r}", f"{rnd.uniform(1, 9):.2f}", f"{rnd.uniform(1, 9):.2f}", f"{rnd.uniform(0.1, 2):.3f}"]
                for c, text in enumerate(cells):
                    page.insert_text((70 + c * 120, top + 20 + r * 18), text, fontsize=10)
            for y in (top + 5, top + 25, top + 30 + (rows - 1) * 18):
                page.draw_line((60, y), (540, y), width=0.8)
            page.insert_text((60, 330), f"The measurements of run {n + 1} were taken at room temperature.",
                             fontsize=10)
        return draw

    return build_pdf(*(table(n) for n in range(pages)), size=(595, 842))


def contents_pdf(setting: str = "QZ_HOME", index: bool = True) -> bytes:
    """A contents page (dotted leaders, page numbers), a page of text about `setting`, and with
    `index` a back-of-book index page."""
    titles = ["Introduction", "Installing", f"Configuring {setting}", "Running", "Logging", "Troubleshooting",
              "Reference", *(["Index"] if index else [])]

    def contents(page):
        page.insert_text((72, 72), "Contents", fontsize=16)
        for i, title in enumerate(titles):
            page.insert_text((72, 110 + 20 * i), f"{i + 1}  {title} " + "." * 60 + f" {3 + 4 * i}", fontsize=11)

    def back_index(page):
        for i, term in enumerate(["cache", setting, "logging", "options", "paths", "restart", "state", "tar"]):
            page.insert_text((72, 72 + 16 * i), f"{term}, {2 + i}, {10 + 3 * i}", fontsize=10)

    body = f"Configuring {setting}: the variable names the folder where the service keeps its state."
    if index:
        body += " It must be writable."
    return build_pdf(contents, body, *([back_index] if index else []), box=(72, 72, 520, 400))


# The handbook's pages: each a list of (kind, text); a paragraph's text is its one distinct word.
HANDBOOK = (
    (("h1", "Tides"), ("h2", "Measuring the Sea"), ("p", "anemometer"), ("h2", "Tide Tables"), ("p", "barnacle")),
    (("h2", "Spring Tides"), ("p", "cormorant"), ("h1", "Harbours"), ("h2", "Breakwaters"), ("p", "dolphin")),
    (("h2", "Moorings"), ("p", "estuary"), ("h2", "Dredging"), ("p", "fathom")),
)


def handbook_pdf(seed: int = 11) -> bytes:
    """'Coastal Notes', three pages of chapters and sections set in larger bold type, each section one
    paragraph led by a word found nowhere else: six snippets in reading order, two per page, whose
    heading paths are (chapter, section)."""
    rnd = random.Random(seed)

    def draw(items):
        def on(page):
            y = 72
            for kind, text in items:
                if kind == "p":
                    body = f"{text} " + " ".join(rnd.choice(WORDS) for _ in range(60)) + "."
                    page.insert_textbox(pymupdf.Rect(72, y, 520, y + 150), body, fontsize=10, fontname="helv")
                    y += 150
                else:
                    size = 18 if kind == "h1" else 13
                    page.insert_text((72, y + 10 + size), text, fontsize=size, fontname="hebo")
                    y += size + 22
        return on

    return build_pdf(*(draw(items) for items in HANDBOOK), metadata={"title": "Coastal Notes"})


def doubled_pdf(pages_log2: int, text: str = "A page of text that repeats. ") -> bytes:
    """A PDF of 2**pages_log2 identical text pages, built in milliseconds by doubling."""
    doc = pymupdf.open(stream=build_pdf(text * 40, box=(60, 60, 540, 780), fontsize=10), filetype="pdf")
    for _ in range(pages_log2):
        with pymupdf.open(stream=doc.tobytes(), filetype="pdf") as copy:
            doc.insert_pdf(copy)
    data = doc.tobytes(garbage=1)
    doc.close()
    return data


def broken_page_tree_pdf() -> bytes:
    """/Count says one page but /Kids is empty: opens, counts 1 page, has none."""
    return re.sub(rb"/Kids\s*\[[^\]]*\]", b"/Kids [ ]", text_pdf(1, seed=6), count=1)


def padded_pdf(seed: int, megabytes: int = 3) -> bytes:
    """A one-page PDF carrying an incompressible attachment: storing it takes a while."""
    doc = pymupdf.open(stream=text_pdf(1, seed=seed, sections=1, words=10), filetype="pdf")
    doc.embfile_add("pad.bin", os.urandom(megabytes << 20))
    data = doc.tobytes()
    doc.close()
    return data


def zeros_flate(megabytes: int) -> bytes:
    """A zlib stream that inflates to `megabytes` MiB of zero bytes, built without inflating it.

    After a full flush deflate forgets its history, so every further MiB of zeros compresses
    to the same bytes: one block repeated, then the Adler-32 of the whole.
    """
    chunk = bytes(1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(megabytes):
        adler = zlib.adler32(chunk, adler)
    return b"\x78\xda" + first + again * (megabytes - 1) + comp.flush() + adler.to_bytes(4, "big")


def bomb_pdf(kind: str, megabytes: int = 1024, repeats: int = 1) -> bytes:
    """A one-page PDF with a FlateDecode stream of `megabytes` MiB of zeros (~1 MB on disk).

    `repeats` lists a "content" bomb that many times in the page's /Contents, so MuPDF inflates it
    again each time: the time inside MuPDF grows while the file does not.

    kind "content": the zeros are a second content stream of the page (NUL is whitespace,
    so the page is valid and shows one line of text). kind "image": a 32768 x 32768 gray
    image XObject (1 GiB of pixels) drawn small on the page.
    """
    seed = build_pdf(lambda page: page.insert_text((72, 72), "Bomb page with one line of text.", fontsize=12))
    doc = pymupdf.open(stream=seed, filetype="pdf")
    page = doc[0]
    font = doc.xref_get_key(page.xref, "Resources/Font")[1]
    bomb = doc.get_new_xref()
    if kind == "content":
        doc.update_object(bomb, "<< >>")
        extra = bomb
    else:
        side = int((megabytes << 20) ** 0.5)
        doc.update_object(
            bomb, f"<< /Type /XObject /Subtype /Image /Width {side} /Height {side} /ColorSpace /DeviceGray "
                  "/BitsPerComponent 8 >>"
        )
        extra = doc.get_new_xref()
        doc.update_object(extra, "<< >>")
        doc.update_stream(extra, b"q 300 0 0 300 100 300 cm /Im0 Do Q")
        doc.xref_set_key(page.xref, "Resources", f"<< /Font {font} /XObject << /Im0 {bomb} 0 R >> >>")
    doc.update_stream(bomb, zeros_flate(megabytes), compress=False)
    doc.xref_set_key(bomb, "Filter", "/FlateDecode")
    contents = [*page.get_contents(), *[extra] * (repeats if kind == "content" else 1)]
    doc.xref_set_key(page.xref, "Contents", "[" + " ".join(f"{x} 0 R" for x in contents) + "]")
    data = doc.tobytes()
    doc.close()
    return data
