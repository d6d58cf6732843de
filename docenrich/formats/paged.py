"""Files into PDF pages with MuPDF: formats it opens (convert_to_pdf), and HTML laid out by its Story.

These run inside the bounded converter process (`child`), never in a web or worker process.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import pymupdf

from . import markup
from .errors import FormatError
from .kinds import Format

log = logging.getLogger(__name__)

PAGE = pymupdf.paper_rect("a4")
MARGIN = 54  # points: three quarters of an inch
FONT_SIZE = 11
# Headings as larger bold type, so the extractor's heading detection gives heading paths.
CSS = f"""
body {{ font-family: sans-serif; font-size: {FONT_SIZE}pt; line-height: 1.35; }}
h1 {{ font-size: 20pt; font-weight: bold; margin: 14pt 0 6pt 0; }}
h2 {{ font-size: 17pt; font-weight: bold; margin: 12pt 0 5pt 0; }}
h3 {{ font-size: 14.5pt; font-weight: bold; margin: 10pt 0 4pt 0; }}
h4 {{ font-size: 13pt; font-weight: bold; margin: 9pt 0 3pt 0; }}
h5 {{ font-size: 12pt; font-weight: bold; margin: 8pt 0 3pt 0; }}
h6 {{ font-size: 11.5pt; font-weight: bold; margin: 8pt 0 3pt 0; }}
p, li, dd, blockquote {{ margin-top: 0; margin-bottom: 5pt; }}
pre, code, tt, kbd, samp {{ font-family: monospace; font-size: 9.5pt; }}
pre {{ white-space: pre-wrap; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 0.5pt solid #999; padding: 2pt 4pt; }}
"""


@dataclass
class Paged:
    """A conversion's result: the PDF, its page count and the document's own title."""

    pdf: bytes
    pages: int
    title: str


def _too_many(pages: int | str, max_pages: int, label: str) -> FormatError:
    return FormatError("too_many_pages", f"This {label} file makes {pages} pages; the limit is {max_pages}.")


def _finish(pdf: pymupdf.Document, title: str, toc: list | None = None) -> bytes:
    """The PDF's bytes with the document's title (and contents, when it had them) kept."""
    if title:
        pdf.set_metadata({"title": title[:300], "producer": "docenrich"})
    if toc:
        try:
            pdf.set_toc(toc)
        except Exception as exc:  # a contents list that does not fit the pages is left out
            log.info("contents not kept: %s", exc)
    return pdf.tobytes(garbage=1, deflate=True)


def mupdf_pdf(data: bytes, fmt: Format, max_pages: int) -> Paged:
    """A file MuPDF opens (EPUB, XPS, FB2, MOBI, CBZ, SVG, images) as a PDF."""
    try:
        doc = pymupdf.open(stream=data, filetype=fmt.kind)
    except Exception as exc:  # MuPDF raises several types for unreadable files
        raise FormatError("corrupt", f"This {fmt.label} file is damaged and cannot be read.") from exc
    with doc:
        if doc.needs_pass:
            raise FormatError("encrypted", f"This {fmt.label} file is locked with a password.")
        if doc.is_reflowable:
            doc.layout(rect=PAGE, fontsize=FONT_SIZE)
        if doc.page_count == 0:
            raise FormatError("empty", f"This {fmt.label} file has no pages.")
        if doc.page_count > max_pages:
            raise _too_many(doc.page_count, max_pages, fmt.label)
        title = " ".join(str((doc.metadata or {}).get("title") or "").split())
        toc = doc.get_toc(simple=True) if doc.is_reflowable else None
        converted = pymupdf.open("pdf", doc.convert_to_pdf())
    with converted:
        return Paged(_finish(converted, title, toc), converted.page_count, title)


def story_pdf(data: bytes, fmt: Format, max_pages: int) -> Paged:
    """HTML, Markdown or plain text, cleaned and laid out into A4 pages by MuPDF's Story."""
    text = markup.decode(data)
    to_html = {"html": markup.clean_html, "markdown": markup.markdown_html, "text": markup.text_html}[fmt.kind]
    body, title = to_html(text)
    if not body.strip():
        raise FormatError("empty", f"This {fmt.label} file has no text.")
    story = pymupdf.Story(html=f"<body>{body}</body>", user_css=CSS)
    buffer = io.BytesIO()
    writer = pymupdf.DocumentWriter(buffer)
    where = PAGE + (MARGIN, MARGIN, -MARGIN, -MARGIN)
    pages, more = 0, True
    while more:
        if pages >= max_pages:
            writer.close()
            raise _too_many(f"more than {max_pages}", max_pages, fmt.label)
        device = writer.begin_page(PAGE)
        more, _ = story.place(where)
        story.draw(device)
        writer.end_page()
        pages += 1
    writer.close()
    with pymupdf.open("pdf", buffer.getvalue()) as laid_out:
        return Paged(_finish(laid_out, title), laid_out.page_count, title)
