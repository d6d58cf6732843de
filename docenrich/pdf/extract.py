"""PDF → snippets: pages streamed in batches, each turned into text, figure, OCR or page snippets."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pymupdf

from docenrich.records import Snippet, embedding_prefix

from .chunking import _chunk_page, _estimate_tokens, _join_lines, _Piece, fit_pieces, path_at
from .document import _open, _page
from .errors import PAGE_ERRORS
from .headers import HEADER_WINDOW, _margin_lines, _strip_headers
from .layout import _Block, _Figure, _load_page, _PageData, _union
from .ocr import _ocr_page
from .order import _mark_headings, _mostly_rtl, _reading_order
from .render import DEFAULT_DPI, _PageRender, _render_whole_page
from .structure import SEP, Outline, Structure, heading_rank
from .tables import faithful, find_tables, may_hold_table, outside, split_rows
from .toc import is_toc_page

log = logging.getLogger(__name__)

MAX_SNIPPETS_PER_PAGE = 999  # ordinals are page * 1000 + index
# Tokens kept free in a snippet for the heading path and title that lead its embedded text.
HEADING_RESERVE = 40
# Pages read before a batch's first page for the headings in force there (the outline, when
# the PDF has one, gives the upper levels at any page).
LOOKBACK_PAGES = 4
# Titles that name a file or a template rather than the document.
_JUNK_TITLE = re.compile(r"(\.(docx?|pdf|tex|dvi|odt|rtf|indd|qxd)$)|^(untitled|microsoft word\b|title\b|none$)",
                         re.IGNORECASE)

# Figures smaller than this (in points, on the page) are icons, bullets or rules.
MIN_FIGURE_PT = 40.0
MIN_FIGURE_AREA_FRACTION = 0.01

_CAPTION_RE = re.compile(
    r"^(fig(?:ure)?|abb(?:ildung)?|table|tab|tabelle|chart|diagram|plate|image|photo|exhibit|illustration)"
    r"\.?\s*[\dIVXivx]+[.:\-–—)]?", re.IGNORECASE)


@dataclass(frozen=True)
class _Options:
    """How a run extracts: chunk sizes, images and OCR."""

    target_tokens: int
    overlap_tokens: int
    image_max_px: int
    ocr: bool
    images: bool
    dpi: int
    ocr_language: str
    tables: bool | str = True  # True/"layout", "lines", or False/"off"
    count: Callable[[str], float] | None = None  # the embedder's token count (an estimate without it)
    max_tokens: int | None = None  # the most content tokens the embedder reads


@dataclass
class _RunState:
    """What carries over from one page to the next."""

    structure: Structure  # the heading path in force, for snippets that follow it
    title: str = ""  # the document's title, carried into what is embedded


class _PageWindow:
    """Parsed pages within HEADER_WINDOW of the current one: running text and body size need them."""

    def __init__(self, doc: pymupdf.Document, render: bool):
        self.doc = doc
        self.render = render
        self.count = doc.page_count
        self.cache: dict[int, _PageData] = {}

    def around(self, num: int) -> range:
        """Load the pages around `num` (dropping those behind it); returns their numbers."""
        window = range(max(1, num - HEADER_WINDOW), min(self.count, num + HEADER_WINDOW) + 1)
        for w in window:
            if w not in self.cache:
                pd = self.cache[w] = _load_page(self.doc, w, render=self.render)
                pd.margins = _margin_lines(pd)  # before its own running lines are stripped
        for old in [k for k in self.cache if k < num - HEADER_WINDOW]:
            del self.cache[old]
        return window

    def body_size(self, window: range) -> float:
        """The commonest font size over the window, 0.0 when it has no text."""
        # Body font size over the same window of pages (a title page alone would
        # call its title "body"); independent of start_page, so ordinals are stable.
        sizes: dict[float, int] = {}
        for w in window:
            for size, count in self.cache[w].sizes.items():
                sizes[size] = sizes.get(size, 0) + count
        return max(sizes, key=sizes.get) if sizes else 0.0


def _find_caption(fig: _Figure, blocks: list[_Block]) -> str:
    best, best_gap = "", 1e9
    fx0, fy0, fx1, fy1 = fig.bbox
    for b in blocks:
        text = " ".join(ln.text for ln in b.lines)
        if not _CAPTION_RE.match(text):
            continue
        bx0, by0, bx1, by1 = b.bbox
        if bx1 < fx0 - 20 or bx0 > fx1 + 20:
            continue  # not horizontally aligned with the figure
        gap = by0 - fy1 if by0 >= fy1 - 5 else fy0 - by1
        if -5 <= gap <= 48 and gap < best_gap:
            best, best_gap = _join_lines([(ln.text, ln.bbox, 0.0) for ln in b.lines]), gap
    return best


def _large_figures(pd: _PageData) -> list[_Figure]:
    """The page's figures big enough to be worth a snippet of their own."""
    return [f for f in pd.figures
            if (f.bbox[2] - f.bbox[0]) >= MIN_FIGURE_PT and (f.bbox[3] - f.bbox[1]) >= MIN_FIGURE_PT
            and (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]) >= MIN_FIGURE_AREA_FRACTION * pd.width * pd.height]


def _ocr_scan(page: pymupdf.Page, pd: _PageData, opts: _Options) -> _PageData | None:
    """The OCR'd text of a page without a usable text layer, or None when there is none."""
    if not opts.ocr:
        return None
    native = max((f.px[0] / max(f.bbox[2] - f.bbox[0], 1) * 72 for f in pd.figures), default=0)
    ocr = _ocr_page(page, pd.number, opts.ocr_language, native)
    if ocr is None:
        return None
    return _PageData(pd.number, ocr.width, ocr.height, ocr.blocks, [], dl=pd.dl, has_text=True,
                     display_space=True)


def _capped(number: int, pieces: list[_Piece], figures: list[_Figure], tables: list[_Piece]
            ) -> tuple[list[_Piece], list[_Figure], list[_Piece]]:
    """Pieces, figures and tables cut to MAX_SNIPPETS_PER_PAGE together (figures first to go, then
    tables), so a page's ordinals never reach the next page's."""
    total = len(pieces) + len(figures) + len(tables)
    if total <= MAX_SNIPPETS_PER_PAGE:
        return pieces, figures, tables
    log.warning("page %d: %d snippets, keeping %d", number, total, MAX_SNIPPETS_PER_PAGE)
    pieces = pieces[:MAX_SNIPPETS_PER_PAGE]
    tables = tables[:MAX_SNIPPETS_PER_PAGE - len(pieces)]
    figures = figures[:MAX_SNIPPETS_PER_PAGE - len(pieces) - len(tables)]
    return pieces, figures, tables


def _render_region(page: pymupdf.Page, pd: _PageData, pieces: list[_Piece], figures: list[_Figure],
                   opts: _Options) -> _PageRender | None:
    """One render of the part of the page the snippets cover, or None when it fails."""
    region = _union([p.bbox for p in pieces] + [f.bbox for f in figures])
    region = (max(0.0, region[0] - 2), max(0.0, region[1] - 2),
              min(pd.width, region[2] + 2), min(pd.height, region[3] + 2))
    try:
        return _PageRender(page, pd, region, opts.dpi, color=bool(figures))
    except PAGE_ERRORS as exc:
        log.warning("page %d: rendering failed, snippets have no image: %s", pd.number, exc)
        return None


def _page_box(bbox, to_page: pymupdf.Matrix, page: pymupdf.Page) -> tuple[float, float, float, float]:
    r = (pymupdf.Rect(bbox) * to_page) & page.rect
    return (round(r.x0, 2), round(r.y0, 2), round(r.x1, 2), round(r.y1, 2))


class _PageOut:
    """One page's snippets as they are made: page coordinates, images cropped from one render, ordinals."""

    def __init__(self, page: pymupdf.Page, pd: _PageData, document_id: str | None, render: _PageRender | None,
                 max_px: int):
        self.page, self.pd, self.document_id, self.render, self.max_px = page, pd, document_id, render, max_px
        self.to_page = pymupdf.Identity if pd.display_space else page.rotation_matrix
        self.snippets: list[Snippet] = []

    def add(self, text: str, bbox, kind: str, meta: dict, pad: float = 2.0, gray: bool = False) -> None:
        """Append a snippet for bbox (unrotated or display space), cropping its image from the render."""
        if len(self.snippets) >= MAX_SNIPPETS_PER_PAGE:
            # Ordinals are page * 1000 + index: one more would take the next page's first ordinal.
            log.warning("page %d: snippet over the per-page cap dropped", self.pd.number)
            return
        img = self.render.crop(bbox, self.max_px, pad=pad) if self.render else None
        if gray and img is not None and img.mode != "L":
            img = img.convert("L")  # text regions are read, not admired: grayscale
        self.snippets.append(Snippet(text=text, image=img, page=self.pd.number,
                                     bbox=_page_box(bbox, self.to_page, self.page), document_id=self.document_id,
                                     ordinal=self.pd.number * 1000 + len(self.snippets), kind=kind, meta=meta))


def _context(path: tuple[str, ...], title: str) -> dict:
    """The meta that carries a snippet's heading path (as a list and as one string) and document title."""
    return {**({"heading": SEP.join(path), "path": list(path)} if path else {}), **({"title": title} if title else {})}


def _emit(out: _PageOut, pieces: list[_Piece], figures: list[_Figure], blocks: list[_Block], kind: str,
          start_path: tuple[str, ...], title: str = "") -> None:
    """Text snippets in reading order, then figure snippets top to bottom with their captions."""
    for p in pieces:
        out.add(p.text, p.bbox, kind, _context(p.path, title), gray=True)
    for f in sorted(figures, key=lambda f: (f.bbox[1], f.bbox[0])):
        caption = _find_caption(f, blocks)
        meta = {"caption": caption} if caption else {}
        meta.update(_context(path_at(pieces, f.bbox[1], start_path), title))
        out.add(caption, f.bbox, "figure", meta, pad=0)


def _page_snippets(doc: pymupdf.Document, pd: _PageData, document_id: str | None, state: _RunState,
                   opts: _Options, body_size: float = 0.0) -> list[Snippet]:
    """All snippets of one parsed page (text/figure/ocr/page kinds)."""
    page = doc[pd.number - 1]
    figures = _large_figures(pd)
    kind = "text"
    if not pd.has_text and pd.error is None:
        # No (usable) text layer: a scan. OCR it, or hand out the page as an image.
        ocr = _ocr_scan(page, pd, opts)
        if ocr is None:
            meta = {"no_text_layer": True, **({"garbled_text": True} if pd.garbled else {})}
            return [_whole_page_snippet(page, pd, document_id, opts, meta)]
        pd, figures, kind = ocr, [], "ocr"
    if pd.error is not None:
        return [_whole_page_snippet(page, pd, document_id, opts, {"error": pd.error})]

    blocks = _reading_order(pd.blocks, rtl=_mostly_rtl(pd.blocks))
    found: list = []
    if kind == "text" and is_toc_page(blocks):
        kind = "toc"  # kept and shown with its page, but left out of search by default
    elif kind == "text" and opts.tables not in (False, "off") and not pd.display_space and may_hold_table(blocks):
        found = faithful(find_tables(page, "lines" if opts.tables == "lines" else "layout"), blocks)
        if found:
            blocks = outside(blocks, found)
    _mark_headings(blocks, body_size)
    state.structure.running = _short_running(pd.running)
    start_path = state.structure.path()
    pieces = _chunk_page(blocks, opts.target_tokens, opts.overlap_tokens, state.structure, pd.number,
                         opts.count or _estimate_tokens)
    tables = _table_pieces(found, pieces, start_path, opts)
    if opts.count is not None and opts.max_tokens:
        title = state.title
        pieces = fit_pieces(pieces, opts.count, opts.max_tokens,
                            lambda p: embedding_prefix(title, p.heading, p.text))
    pieces, figures, tables = _capped(pd.number, pieces, figures, tables)
    covered = pieces + tables
    render = _render_region(page, pd, covered, figures, opts) if opts.images and (covered or figures) else None
    out = _PageOut(page, pd, document_id, render, opts.image_max_px)
    _emit(out, pieces, figures, blocks, kind, start_path, state.title)
    for t in tables:
        out.add(t.text, t.bbox, "table", _context(t.path, state.title))
    if not out.snippets:
        # Text existed but nothing survived (e.g. only a page number): still say so.
        return [_whole_page_snippet(page, pd, document_id, opts, {"no_text_layer": False, "no_content": True})]
    return out.snippets


def _short_running(text: str) -> str:
    """A running header fit to stand for a topic: a few words, not a page label."""
    text = " ".join(text.split())
    return text if 0 < len(text) <= 80 and any(c.isalpha() for c in text) else ""


def _table_pieces(found: list, pieces: list[_Piece], start_path: tuple[str, ...], opts: _Options) -> list[_Piece]:
    """Table snippets: the whole table as Markdown, cut into row groups when it is too long to embed,
    each under the heading path of the text above it."""
    count = opts.count or _estimate_tokens
    limit = (opts.max_tokens or opts.target_tokens) - min(HEADING_RESERVE, opts.target_tokens // 4)
    return [_Piece(md, t.bbox, path_at(pieces, t.bbox[1], start_path)) for t in found
            for md in split_rows(t.markdown, count, limit)]


def _whole_page_snippet(page: pymupdf.Page, pd: _PageData, document_id: str | None, opts: _Options,
                        meta: dict) -> Snippet:
    """The whole page as one image snippet: scans, unreadable pages, pages with nothing left."""
    img = None
    if opts.images:
        native = max((f.px[0] for f in pd.figures), default=0)
        try:
            img = _render_whole_page(page, opts.image_max_px, opts.dpi, native)
        except PAGE_ERRORS as exc:
            log.warning("page %d: could not be rendered: %s", pd.number, exc)
    r = page.rect
    return Snippet(text="", image=img, page=pd.number, bbox=(r.x0, r.y0, r.x1, r.y1), document_id=document_id,
                   ordinal=pd.number * 1000, kind="page", meta=meta)


def _snippets_of(doc: pymupdf.Document, pages: _PageWindow, num: int, document_id: str | None,
                 state: _RunState, opts: _Options) -> list[Snippet]:
    """Page `num`'s snippets, its running text judged against its neighbours; a failure gives the page image."""
    window = pages.around(num)
    pd = pages.cache[num]
    if pd.blocks:
        _strip_headers(pd, [pages.cache[w] for w in window if w != num])
    body = pages.body_size(window)
    try:
        found = _page_snippets(doc, pd, document_id, state, opts, body)
    except PAGE_ERRORS as exc:
        log.warning("page %d: extraction failed, emitting it as an image: %s", num, exc, exc_info=True)
        pd_err = _PageData(num, pd.width, pd.height, [], pd.figures, error=str(exc))
        found = [_whole_page_snippet(_page(doc, num), pd_err, document_id, opts, {"error": str(exc)})]
    pd.dl = None  # the page's display list is only needed for its own render
    return found


def iter_snippet_batches(source: bytes | str | Path, document_id: str | None = None, *, start_page: int = 1,
                         end_page: int | None = None, batch_pages: int = 8, target_tokens: int = 300,
                         overlap_tokens: int = 40, image_max_px: int = 1024, ocr: bool = True,
                         progress: Callable[[int, int], None] | None = None, images: bool = True,
                         dpi: int = DEFAULT_DPI, ocr_language: str = "eng", tables: bool | str = True,
                         count_tokens: Callable[[str], float] | None = None,
                         max_tokens: int | None = None) -> Iterator[list[Snippet]]:
    """Yield the snippets of every `batch_pages` pages of [start_page, end_page], streaming.

    With count_tokens (the embedder's tokenizer) and max_tokens (the most it reads), snippets are
    sized in its tokens and their embedded text (title, heading, text) never exceeds max_tokens.
    """
    doc = _open(source)
    try:
        start = max(1, start_page)
        end = doc.page_count if end_page is None else min(doc.page_count, end_page)
        if start > end:
            return
        if max_tokens:
            # Room for a short heading and title in front: fit_pieces cuts whatever still overflows.
            target_tokens = min(target_tokens, max_tokens - min(HEADING_RESERVE, max_tokens // 4))
        opts = _Options(target_tokens=max(10, target_tokens),
                        overlap_tokens=max(0, min(overlap_tokens, target_tokens // 2)),
                        image_max_px=max(16, image_max_px), ocr=ocr, images=images, dpi=dpi,
                        ocr_language=ocr_language, tables=tables, count=count_tokens, max_tokens=max_tokens)
        pages = _PageWindow(doc, render=images)
        state = _RunState(Structure(Outline.of(doc)), title=document_title(doc))
        _look_back(pages, start, state.structure)
        step = max(1, batch_pages)
        for bstart in range(start, end + 1, step):
            bend = min(end, bstart + step - 1)
            batch: list[Snippet] = []
            for num in range(bstart, bend + 1):
                batch.extend(_snippets_of(doc, pages, num, document_id, state, opts))
            if progress is not None:
                progress(bend - start + 1, end - start + 1)
            yield batch
    finally:
        doc.close()


def _look_back(pages: _PageWindow, start: int, structure: Structure) -> None:
    """Read the headings of the few pages before `start`, so a batch knows the path in force there."""
    first = max(1, start - LOOKBACK_PAGES)
    if first >= start:
        return
    window = pages.around(first)
    body = pages.body_size(window)
    for num in range(first, start):
        pages.around(num)
        pd = pages.cache[num]
        if not pd.blocks or pd.error is not None:
            continue
        _strip_headers(pd, [pages.cache[w] for w in pages.cache if w != num and abs(w - num) <= HEADER_WINDOW])
        blocks = _reading_order(pd.blocks, rtl=_mostly_rtl(pd.blocks))
        _mark_headings(blocks, body)
        for b in blocks:
            structure.at(num, b.bbox[1])
            if b.heading:
                text = _join_lines([(ln.text, ln.bbox, 0.0) for ln in b.lines])
                structure.heading(text, heading_rank(max(ln.size for ln in b.lines),
                                                     all(ln.bold for ln in b.lines), b.entry), b.entry)
        pd.dl = None


def extract_snippets(source: bytes | str | Path, document_id: str | None = None, **options) -> list[Snippet]:
    """All snippets of a document (every batch of iter_snippet_batches, concatenated)."""
    out: list[Snippet] = []
    for batch in iter_snippet_batches(source, document_id, **options):
        out.extend(batch)
    return out


def document_title(doc: pymupdf.Document) -> str:
    """The document's own title from its metadata, or "" when it is empty or names a file."""
    title = " ".join(str((doc.metadata or {}).get("title") or "").split())[:200]
    return "" if len(title) < 3 or _JUNK_TITLE.search(title) else title
