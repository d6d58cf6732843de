"""Tables found by PyMuPDF's find_tables, as Markdown text with their box on the page."""
from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pymupdf

from .errors import PAGE_ERRORS
from .layout import _Block

log = logging.getLogger(__name__)

# find_tables costs tenths of a second a page: it runs only where the text is laid out in rows of
# cells and horizontal rules cross a good part of the page at three heights or more, and not on
# drawings so busy that they are a figure.
MIN_RULES = 3  # heights with a rule: top, below the header, bottom
MIN_RULE_FRACTION = 0.25  # of the page width
MARGIN_FRACTION = 0.08  # of the page height, at the top and the bottom
MAX_DRAWING_ITEMS = 400
MIN_CELLS = 4
MIN_WORDS_KEPT = 0.9
_WORD = re.compile(r"\w+")


MIN_ROW_CELLS = 3  # separate text lines on one baseline, for a row of a table


@dataclass
class _Table:
    markdown: str
    bbox: tuple[float, float, float, float]


def _horizontal_spans(page: pymupdf.Page) -> dict[int, float] | None:
    """Total width of horizontal strokes (lines, rectangle edges) by rounded y; None for a busy drawing."""
    spans: dict[int, float] = {}
    items = 0
    for path in page.get_cdrawings():
        for item in path.get("items", ()):
            items += 1
            if items > MAX_DRAWING_ITEMS:
                return None
            if item[0] == "re":
                x0, y0, x1, y1 = item[1]
                edges = [(x0, x1, y0), (x0, x1, y1)]
            elif item[0] == "l" and abs(item[1][1] - item[2][1]) < 1:
                edges = [(item[1][0], item[2][0], item[1][1])]
            else:
                continue
            for a, b, y in edges:
                spans[round(y)] = spans.get(round(y), 0.0) + abs(b - a)
    return spans


def may_hold_table(blocks: list[_Block]) -> bool:
    """Whether the page's text has rows of MIN_ROW_CELLS or more separate lines at MIN_RULES heights.

    A cheap test on text already parsed: reading the page's drawings for rules costs more than
    extracting its text, so only pages whose text is laid out like a table's rows pay for it.
    """
    rows: dict[int, int] = {}
    for b in blocks:
        for ln in b.lines:
            key = round(ln.bbox[3] / 2)  # baselines within ~2 pt
            rows[key] = rows.get(key, 0) + 1
    return sum(1 for n in rows.values() if n >= MIN_ROW_CELLS) >= MIN_RULES


def _ruled(page: pymupdf.Page) -> pymupdf.Rect | None:
    """The band of the page where horizontal rules cross a good part of it at several heights, as
    tables have (None when there is none): table detection then reads the text of that band only."""
    spans = _horizontal_spans(page)
    if not spans:
        return None
    rect = page.rect
    margin = rect.height * MARGIN_FRACTION  # running-header and footer rules are no table
    rules = sorted((w, y) for y, w in spans.items()
                   if w >= rect.width * MIN_RULE_FRACTION and rect.y0 + margin < y < rect.y1 - margin)
    # A table's rules share its width: look for MIN_RULES of them within 5% of each other.
    heights = [y for i in range(len(rules) - MIN_RULES + 1) if rules[i + MIN_RULES - 1][0] <= rules[i][0] * 1.05
               for _, y in rules[i : i + MIN_RULES]]
    if not heights:
        return None
    return pymupdf.Rect(rect.x0, max(rect.y0, min(heights) - 3), rect.x1, min(rect.y1, max(heights) + 3))


def find_tables(page: pymupdf.Page, mode: str = "layout") -> list[_Table]:
    """The page's ruled tables as Markdown, in unrotated page space; none on rotated pages.

    mode "lines": PyMuPDF's ruled-line finder alone (milliseconds, needs vertical rules too);
    "layout": the same, then, where it finds no table, PyMuPDF's finder guided by its layout model
    (finds tables ruled only horizontally, as LaTeX's booktabs draws them; 0.1–0.3 s a page on a CPU).
    """
    band = None if page.rotation else _ruled(page)
    if band is None:
        return []
    try:
        # A grid ruled both ways is found by the line finder in milliseconds; the layout model
        # (tenths of a second) is left for pages where it finds none, such as booktabs tables.
        out = _markdown(_line_tables(page, band))
        if not out and mode == "layout":
            out = _markdown(_layout_tables(page))
    except PAGE_ERRORS + (ValueError,) as exc:
        log.warning("page %d: table detection failed: %s", page.number + 1, exc)
        return []
    return out


def _markdown(found) -> list[_Table]:
    """The tables of a find_tables result with at least two columns and MIN_CELLS cells, as Markdown."""
    out = []
    for table in found.tables:
        if table.row_count * table.col_count < MIN_CELLS or table.col_count < 2:
            continue
        markdown = table.to_markdown(clean=False).strip()
        if markdown:
            out.append(_Table(markdown, tuple(table.bbox)))
    return out


_layout_ready = False


def _layout_tables(page: pymupdf.Page):
    """PyMuPDF's table finder guided by its layout model, the variant that reads the page's text and
    geometry without an image of it: a third of the time, and the same tables on our pages."""
    global _layout_ready
    if not _layout_ready:
        try:
            model = _layout_model()
            pymupdf._get_layout = lambda *args, **kwargs: model.predict(*args, **kwargs)
        except Exception as exc:  # an older PyMuPDF, or no layout package: its default finder
            log.info("PyMuPDF's layout model is not available (%s); using its default table finder", exc)
        _layout_ready = True
    return page.find_tables()


def _layout_model():
    """PyMuPDF's layout model, imported here, in the process that runs it (see docenrich/__init__)."""
    from docenrich import DEFERRED_MODULES

    for name in DEFERRED_MODULES:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
    saved = pymupdf._get_layout
    # Importing the package activates its default model; a placeholder skips that load.
    pymupdf._get_layout = saved if callable(saved) else (lambda *args, **kwargs: None)
    try:
        from pymupdf.layout import DocumentLayoutAnalyzer
    finally:
        pymupdf._get_layout = saved
    log.info("PyMuPDF's layout model loaded in process %d", os.getpid())
    return DocumentLayoutAnalyzer.get_model(feature_set_name="rf")


def _line_tables(page: pymupdf.Page, band: pymupdf.Rect):
    """PyMuPDF's ruled-line table finder over the ruled band, without the layout model."""
    try:
        return page.find_tables(clip=band, use_layout=False)
    except TypeError:  # PyMuPDF before the layout analyzer
        return page.find_tables(clip=band)


def _inside(b: _Block, t: _Table) -> bool:
    cx, cy = (b.bbox[0] + b.bbox[2]) / 2, (b.bbox[1] + b.bbox[3]) / 2
    return t.bbox[0] <= cx <= t.bbox[2] and t.bbox[1] <= cy <= t.bbox[3]


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2}


def faithful(tables: list[_Table], blocks: list[_Block]) -> list[_Table]:
    """The tables whose Markdown keeps the words of the text they cover (a form laid out in a grid
    often comes back with words cut across cells; its text is then better left as text)."""
    kept = []
    for t in tables:
        covered = _words(" ".join(ln.text for b in blocks if _inside(b, t) for ln in b.lines))
        if covered and len(covered & _words(t.markdown)) >= MIN_WORDS_KEPT * len(covered):
            kept.append(t)
    return kept


def outside(blocks: list[_Block], tables: list[_Table]) -> list[_Block]:
    """The blocks whose centre lies in no table (the table snippet carries their text)."""
    return [b for b in blocks if not any(_inside(b, t) for t in tables)]


def split_rows(markdown: str, count: Callable[[str], float], limit: int) -> list[str]:
    """A Markdown table cut into row groups of at most `limit` tokens, each repeating the header."""
    lines = markdown.splitlines()
    head, rows = lines[:2], lines[2:]
    parts: list[str] = []
    cur: list[str] = []
    for row in rows:
        if cur and count("\n".join(head + cur + [row])) > limit:
            parts.append("\n".join(head + cur))
            cur = []
        cur.append(row)
    if cur or not parts:
        parts.append("\n".join(head + cur))
    return parts
