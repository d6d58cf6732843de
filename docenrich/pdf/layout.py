"""A page's text and pictures as cleaned lines, blocks and figure boxes, read from MuPDF."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pymupdf

from .errors import PAGE_ERRORS
from .text import _JUNK_RE, _clean_text, _meaningful

log = logging.getLogger(__name__)

# Text flags: no TEXT_PRESERVE_LIGATURES (MuPDF expands "ﬁ"), no PRESERVE_WHITESPACE
# (we normalise), no CID_FOR_UNKNOWN_UNICODE (glyph ids would masquerade as Greek or
# CJK letters; U+FFFD is honest and we drop it).
TEXT_FLAGS = pymupdf.TEXT_MEDIABOX_CLIP

# Guards against hostile pages made of thousands of tiny objects.
MAX_BLOCKS_PER_PAGE = 3000
MAX_SPANS_PER_PAGE = 40000

_IMAGE_SIZE_RE = re.compile(r"width: (\d+), height: (\d+)")

Box = tuple[float, float, float, float]


@dataclass
class _Line:
    text: str
    bbox: Box  # unrotated page space
    size: float
    bold: bool
    # The first span's size and whether it is set in a fixed-pitch font: an API entry's
    # signature line ("sum (x)", "int foo(void)") leads with its name in code type.
    lead_size: float = 0.0
    lead_mono: bool = False
    lead_bold: str = ""  # the bold words a line opens with, when the rest is not bold (a run-in heading)


@dataclass
class _Block:
    lines: list[_Line]
    bbox: Box
    heading: bool = False
    col: int | None = None      # column index from _reading_order; None spans columns
    entry: bool = False         # an API entry's signature: a topic heading set in code type


@dataclass
class _Figure:
    bbox: Box
    px: tuple[int, int]


@dataclass
class _PageData:
    number: int                 # 1-based
    width: float                # unrotated size
    height: float
    blocks: list[_Block]
    figures: list[_Figure]
    garbled: bool = False       # text layer exists but is mostly unknown glyphs
    error: str | None = None
    margins: list = field(default_factory=list)  # outer lines before header removal
    running: str = ""           # the running header's words (no page number), once stripped
    display_space: bool = False  # coordinates as displayed (OCR) instead of unrotated
    sizes: dict = field(default_factory=dict)  # font size -> characters, for the body size
    has_text: bool = False      # meaningful text before header removal
    dl: object | None = None    # display list, reused for rendering (one interpretation)


@dataclass
class _Tally:
    """Running counts over one page's spans: how many were read, and their known/unknown glyphs."""

    spans: int = 0
    known: int = 0
    unknown: int = 0


def _union(boxes) -> Box:
    x0s, y0s, x1s, y1s = zip(*boxes, strict=True)
    return (min(x0s), min(y0s), max(x1s), max(y1s))


def _to_unrotated(page: pymupdf.Page, bbox) -> Box:
    r = pymupdf.Rect(bbox) * page.derotation_matrix
    return (r.x0, r.y0, r.x1, r.y1)


_BOLD_FONTS: dict[str, bool] = {}


def _font_is_bold(font: str) -> bool:
    bold = _BOLD_FONTS.get(font)
    if bold is None:
        low = font.lower()
        bold = _BOLD_FONTS[font] = any(k in low for k in ("bold", "black", "heavy", "semibold"))
    return bold


_MONO_FONTS: dict[str, bool] = {}


def _font_is_mono(font: str) -> bool:
    mono = _MONO_FONTS.get(font)
    if mono is None:
        low = font.lower()
        mono = _MONO_FONTS[font] = any(k in low for k in ("mono", "courier", "cmtt", "consol", "code", "typewriter",
                                                             "lmtt", "txtt", "menlo", "inconsolata"))
    return mono


def _box_fixer(page: pymupdf.Page, rotated_space: bool) -> Callable[[object], Box]:
    """Maps MuPDF boxes to unrotated page space (MuPDF reports rotated pages as displayed)."""
    if rotated_space and page.rotation:
        m = page.derotation_matrix

        def fix(bb) -> Box:
            r = pymupdf.Rect(bb) * m
            return (r.x0, r.y0, r.x1, r.y1)
        return fix
    return tuple


def _clean_span(raw: str, tally: _Tally) -> tuple[str, bool]:
    """(cleaned text, whether junk glyphs were dropped from its start) of a non-ASCII span."""
    bad = raw.count("\ufffd")
    tally.unknown += bad
    tally.known += len(raw) - bad
    return _clean_text(raw), _JUNK_RE.match(raw) is not None


def _parse_line(ln: dict, fix: Callable[[object], Box], tally: _Tally) -> _Line | None:
    """One line of MuPDF's dict output as cleaned text, its main font size and boldness."""
    parts: list[str] = []
    prev_x1 = -1e9
    best_size, best_n = 0.0, -1
    bold_chars = chars = 0
    lead: dict | None = None
    run_in = ""  # the bold words the line opens with, once a regular word follows them
    run_in_done = False
    had_bold = False
    for sp in ln["spans"]:
        raw = sp["text"]
        if raw.isascii() and raw.isprintable():
            # Fast path for the common case: nothing to clean but doubled spaces.
            t = " ".join(raw.split()) if "  " in raw else raw
            tally.known += len(raw)
            dropped_lead = False
        else:
            t, dropped_lead = _clean_span(raw, tally)
        n = len(t) - t.count(" ")
        if not n:
            continue
        bb = sp["bbox"]
        if lead is None:
            lead = sp
        if parts and t[0] != " " and parts[-1][-1] != " ":
            # Spans that abut without a space but sit apart on the page (or were
            # separated by unknown glyphs) are separate words.
            if dropped_lead or bb[0] - prev_x1 > 0.15 * sp["size"]:
                parts.append(" ")
        parts.append(t)
        prev_x1 = bb[2]
        chars += n
        if n > best_n:
            best_size, best_n = sp["size"], n
        bold = bool(sp["flags"] & 16)
        if not bold:
            font = sp["font"]
            bold = _BOLD_FONTS.get(font)
            if bold is None:
                bold = _font_is_bold(font)
        if bold:
            bold_chars += n
            had_bold = True
        elif not run_in_done:
            run_in_done = True
            run_in = "".join(parts[:-1]).strip() if had_bold else ""
    if not parts:
        return None
    mono = lead is not None and bool(lead["flags"] & 8 or _font_is_mono(lead["font"]))
    return _Line("".join(parts).strip(), fix(ln["bbox"]), round(best_size, 1), bold_chars * 2 > chars,
                 round(lead["size"], 1) if lead else 0.0, mono, run_in)


def _parse_block(b: dict, fix: Callable[[object], Box], tally: _Tally) -> _Block | None:
    """One text block of MuPDF's dict output; stops early once the page's span budget is spent."""
    lines: list[_Line] = []
    for ln in b.get("lines", ()):
        tally.spans += len(ln["spans"])
        if tally.spans > MAX_SPANS_PER_PAGE:
            break
        line = _parse_line(ln, fix, tally)
        if line is not None:
            lines.append(line)
    if not lines:
        return None
    # MuPDF's block box, unless lines were dropped (junk glyphs) and it would be too big.
    return _Block(lines, fix(b["bbox"]) if len(lines) == len(b["lines"]) else _union(ln.bbox for ln in lines))


def _size_histogram(blocks: list[_Block]) -> dict[float, int]:
    """Characters set in each font size."""
    sizes: dict[float, int] = {}
    for bl in blocks:
        for ln in bl.lines:
            sizes[ln.size] = sizes.get(ln.size, 0) + len(ln.text)
    return sizes


def _parse_dict(page: pymupdf.Page, d: dict, number: int, rotated_space: bool) -> _PageData:
    """Turn MuPDF's dict output into cleaned lines/blocks and figure boxes."""
    urect = page.rect * page.derotation_matrix
    fix = _box_fixer(page, rotated_space)
    blocks: list[_Block] = []
    figures: list[_Figure] = []
    tally = _Tally()
    raw_blocks = d.get("blocks", [])
    if len(raw_blocks) > MAX_BLOCKS_PER_PAGE:
        log.warning("page %d: %d blocks, keeping the first %d", number, len(raw_blocks), MAX_BLOCKS_PER_PAGE)
        raw_blocks = raw_blocks[:MAX_BLOCKS_PER_PAGE]
    for b in raw_blocks:
        if b.get("type") == 1:
            figures.append(_Figure(fix(b["bbox"]), (int(b.get("width", 0)), int(b.get("height", 0)))))
            continue
        block = _parse_block(b, fix, tally)
        if block is not None:
            blocks.append(block)
        if tally.spans > MAX_SPANS_PER_PAGE:
            log.warning("page %d: more than %d text spans, rest ignored", number, MAX_SPANS_PER_PAGE)
            break
    garbled = tally.unknown > 0 and tally.unknown >= tally.known
    if garbled:
        blocks = []
    has_text = any(_meaningful(ln.text) for bl in blocks for ln in bl.lines)
    return _PageData(number, urect.width, urect.height, blocks, figures, garbled=garbled, has_text=has_text,
                     sizes=_size_histogram(blocks))


def _textpage(page: pymupdf.Page, dl, flags: int) -> pymupdf.TextPage:
    """A textpage from the display list when there is one (no second interpretation)."""
    if dl is None:
        return page.get_textpage(flags=flags)
    tp = dl.get_textpage(flags)
    if not isinstance(tp, pymupdf.TextPage):  # some PyMuPDF releases return the raw MuPDF object
        tp = pymupdf.TextPage(tp)
    return tp


def _read_page(page: pymupdf.Page, number: int, render: bool) -> _PageData:
    """Parse one page's text and image blocks, keeping its display list when it will be rendered."""
    # Image blocks come from a textpage that keeps images, read with "blocks" (bbox and
    # size only): its "dict" would re-encode every picture (50-170 ms on a photo
    # page). Only pages that have images pay for a second, image-free textpage.
    dl = page.get_displaylist(annots=True) if render else None
    tp = _textpage(page, dl, TEXT_FLAGS | pymupdf.TEXT_PRESERVE_IMAGES)
    images = [b for b in tp.extractBLOCKS() if b[6] == 1]
    if images:
        tp = _textpage(page, dl, TEXT_FLAGS)
    data = _parse_dict(page, tp.extractDICT(), number, rotated_space=render)
    for b in images:
        m = _IMAGE_SIZE_RE.search(b[4])
        bbox = _to_unrotated(page, b[:4]) if render and page.rotation else tuple(b[:4])
        data.figures.append(_Figure(bbox, (int(m.group(1)), int(m.group(2))) if m else (0, 0)))
    data.dl = dl
    return data


def _load_page(doc: pymupdf.Document, number: int, render: bool = True) -> _PageData:
    """Parse one page (1-based); never raises: a broken page becomes an error record."""
    try:
        return _read_page(doc[number - 1], number, render)
    except PAGE_ERRORS as exc:
        log.warning("page %d could not be read, emitting it as an image: %s", number, exc)
        try:
            r = doc[number - 1].rect
            w, h = r.width, r.height
        except Exception:
            w = h = 0.0
        return _PageData(number, w, h, [], [], error=str(exc) or type(exc).__name__)
