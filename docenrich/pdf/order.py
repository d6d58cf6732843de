"""Reading order: column gutters, columns read in turn between full-width blocks, and headings."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .layout import _Block
from .text import _RTL_RE


def _free_bins(narrow: list[_Block], x0: float, width: float) -> np.ndarray:
    """Which 2-pt vertical strips across the text are (nearly) free of column blocks."""
    nbins = int(width // 2) + 1
    cov = np.zeros(nbins)
    for b in narrow:
        i0 = int((b.bbox[0] - x0) // 2)
        i1 = int((b.bbox[2] - x0) // 2)
        # Single-line blocks (centred author/date lines, labels) count little: they often
        # sit over the gutter above the columns.
        weight = 1.0 if len(b.lines) > 1 else 0.25
        cov[i0:i1 + 1] += (b.bbox[3] - b.bbox[1]) * weight
    limit = 0.05 * cov.max()
    return cov <= limit


def _runs(free: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, end) of every maximal run of free strips, end exclusive."""
    n = len(free)
    i = 0
    while i < n:
        if not free[i]:
            i += 1
            continue
        j = i
        while j < n and free[j]:
            j += 1
        yield i, j
        i = j


def _find_gutters(blocks: list[_Block]) -> list[tuple[float, float]]:
    """Vertical white strips separating side-by-side columns of text blocks."""
    if len(blocks) < 2:
        return []
    x0 = min(b.bbox[0] for b in blocks)
    x1 = max(b.bbox[2] for b in blocks)
    width = x1 - x0
    if width < 100:
        return []
    # Full-width blocks (titles, abstracts, tables) would hide the gutter: ignore them.
    narrow = [b for b in blocks if (b.bbox[2] - b.bbox[0]) < 0.6 * width and len(b.lines) > 0]
    if len(narrow) < 2:
        return []
    free = _free_bins(narrow, x0, width)
    gutters = []
    for i, j in _runs(free):
        g0, g1 = x0 + i * 2, x0 + j * 2
        if i > 0 and j < len(free) and g1 - g0 >= 4:
            left = [b for b in narrow if (b.bbox[0] + b.bbox[2]) / 2 < g0]
            right = [b for b in narrow if (b.bbox[0] + b.bbox[2]) / 2 > g1]
            if left and right and _side_by_side(left, right, width):
                gutters.append((g0, g1))
    return gutters


def _side_by_side(left: list[_Block], right: list[_Block], width: float) -> bool:
    """Both sides hold real text and overlap vertically, as columns do.

    Figure labels ("x", "(a) Sinus") scattered left and right of a white strip inside a
    drawing must not pass: each side needs some text mass and some width.
    """
    for side in (left, right):
        chars = sum(len(ln.text) for b in side for ln in b.lines)
        extent = max(b.bbox[2] for b in side) - min(b.bbox[0] for b in side)
        if chars < 150 or extent < 0.25 * width:
            return False

    def span(bs):
        return min(b.bbox[1] for b in bs), max(b.bbox[3] for b in bs), sum(b.bbox[3] - b.bbox[1] for b in bs)
    l0, l1, lh = span(left)
    r0, r1, rh = span(right)
    overlap = min(l1, r1) - max(l0, r0)
    lines_l = sum(len(b.lines) for b in left)
    lines_r = sum(len(b.lines) for b in right)
    return overlap > 0.3 * min(lh, rh) and lines_l >= 3 and lines_r >= 3


def _column_of(b: _Block, gutters: list[tuple[float, float]]) -> int | None:
    """The block's column (0 = leftmost), or None when it crosses a gutter."""
    for g0, g1 in gutters:
        if b.bbox[0] < g0 - 2 and b.bbox[2] > g1 + 2:
            return None  # crosses a gutter: spans columns
    cx = (b.bbox[0] + b.bbox[2]) / 2
    return sum(1 for g0, _ in gutters if cx > g0)


def _section_order(section: list[tuple[int, _Block]], rtl: bool) -> list[_Block]:
    """Blocks between two full-width blocks: column by column (right to left for RTL), top down."""
    section = sorted(section, key=lambda cb: ((-cb[0] if rtl else cb[0]), cb[1].bbox[1], cb[1].bbox[0]))
    return [b for _, b in section]


def _reading_order(blocks: list[_Block], rtl: bool = False) -> list[_Block]:
    """Blocks in reading order: columns top to bottom, separated by full-width blocks."""
    if not blocks:
        return []
    gutters = _find_gutters(blocks)
    if not gutters:
        for b in blocks:
            b.col = 0
        return sorted(blocks, key=lambda b: (round(b.bbox[1], 0), b.bbox[0]))
    ordered: list[_Block] = []
    section: list[tuple[int, _Block]] = []
    for b in sorted(blocks, key=lambda b: (b.bbox[1], b.bbox[0])):
        col = b.col = _column_of(b, gutters)
        if col is None:
            ordered.extend(_section_order(section, rtl))
            section = []
            ordered.append(b)
        else:
            section.append((col, b))
    ordered.extend(_section_order(section, rtl))
    return ordered


def _mostly_rtl(blocks: list[_Block]) -> bool:
    """Whether most characters of the blocks belong to right-to-left scripts."""
    return sum(len(_RTL_RE.findall(ln.text)) for b in blocks for ln in b.lines) > \
        sum(len(ln.text) for b in blocks for ln in b.lines) / 2


# An API entry's signature leads with its name in code type at least this much above the body.
ENTRY_SIZE = 1.05
MAX_ENTRY_LINES = 8  # one entry may list several call forms


def _is_entry(b: _Block, body_size: float) -> bool:
    """A signature line that opens an API entry: short, and led by a name in larger or bold code type."""
    first = b.lines[0]
    if not all(ln.lead_mono for ln in b.lines) or any(len(ln.text) > 160 for ln in b.lines):
        return False
    return (body_size > 0 and first.lead_size >= body_size * ENTRY_SIZE) or (first.bold and len(b.lines) <= 2)


def _mark_headings(blocks: list[_Block], body_size: float) -> None:
    """Mark as headings the short blocks that stand out: larger or bold type, no closing punctuation,
    and as entries the signature lines that open an API entry."""
    for b in blocks:
        if len(b.lines) <= MAX_ENTRY_LINES and _is_entry(b, body_size):
            b.heading = b.entry = True
            continue
        words = sum(len(ln.text.split()) for ln in b.lines)
        if len(b.lines) > 3 or words > 20 or words == 0:
            continue
        size = max(ln.size for ln in b.lines)
        last = b.lines[-1].text.rstrip()
        larger = body_size > 0 and size >= body_size * 1.15
        bold = all(ln.bold for ln in b.lines)
        if (larger or bold) and not last.endswith((".", ",", ";")) or (larger and words <= 12):
            b.heading = True
