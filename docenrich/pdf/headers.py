"""Running headers and footers, and page numbers, found by comparing neighbouring pages."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from .layout import _Block, _Line, _PageData, _size_histogram, _union
from .text import _meaningful

# Fractions of page height searched for running headers/footers and for page numbers
# (LaTeX puts folios ~17% above the bottom edge). Only rows between the edge and the
# first row that is neither are ever dropped, so body text below them is safe.
HEADER_BAND = 0.12
PAGE_NUMBER_BAND = 0.2
HEADER_WINDOW = 4       # pages either side compared when looking for repeats
HEADER_Y_TOLERANCE = 6.0

# "12", "- 12 -", "Page 3 of 10", "Seite 3 von 10", "iv" (a well-formed roman numeral, so
# words such as "mild" or "did" are not taken for folios).
_PAGE_NUM_RE = re.compile(
    r"^(?:page|seite|pg\.?|p\.|s\.)?\s*[-–—(\[]?\s*"
    r"(?:\d{1,5}|(?=[ivxlcdm])m{0,3}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3}))"
    r"\s*[-–—)\]]?(?:\s*(?:/|of|von|de|sur)\s*\d{1,5})?$", re.IGNORECASE)
_DIGITS_RE = re.compile(r"\d+")

# (normalised text, y0, top?) of one line in a page's top or bottom band.
MarginLine = tuple[str, float, bool]


def _norm(text: str) -> str:
    return _DIGITS_RE.sub("#", text.lower()).strip()


def _margin_lines(pd: _PageData) -> list[MarginLine]:
    """(normalised text, y0, top?) of lines lying in the page's top or bottom band."""
    out = []
    band = pd.height * HEADER_BAND
    for b in pd.blocks:
        for ln in b.lines:
            if ln.bbox[3] <= band:
                out.append((_norm(ln.text), ln.bbox[1], True))
            elif ln.bbox[1] >= pd.height - band:
                out.append((_norm(ln.text), ln.bbox[1], False))
    return out


def _repeated(ln: _Line, others: list[list[MarginLine]], body: float) -> bool:
    """Whether the same digit-normalised line sits at about the same height on enough neighbours."""
    # Running headers are set at body size or smaller; a larger line repeating at the
    # same spot is a templated heading ("Section 3 overview") and stays.
    if not others or ln.size > body * 1.1:
        return False
    need = 2 if len(others) >= 3 else 1
    key = _norm(ln.text)
    hits = 0
    for lines in others:
        if any(k == key and abs(y - ln.bbox[1]) <= HEADER_Y_TOLERANCE for k, y, _ in lines):
            hits += 1
            if hits >= need:
                return True
    return False


def _is_running(ln: _Line, top: bool, pd: _PageData, others: list[list[MarginLine]], body: float) -> bool:
    """A page number, or a line in the header/footer band that repeats on neighbouring pages."""
    repeat_band = pd.height * HEADER_BAND
    in_repeat_band = ln.bbox[3] <= repeat_band if top else ln.bbox[1] >= pd.height - repeat_band
    return bool(_PAGE_NUM_RE.match(ln.text.strip())) or (in_repeat_band and _repeated(ln, others, body))


def _edge_rows(pd: _PageData, top: bool) -> Iterator[list[_Line]]:
    """Rows of lines within the page-number band, walking inward from the top or bottom edge."""
    band = pd.height * PAGE_NUMBER_BAND
    ordered = sorted((ln for b in pd.blocks for ln in b.lines), key=lambda ln: ln.bbox[1] if top else -ln.bbox[3])
    i = 0
    while i < len(ordered):
        ln = ordered[i]
        in_band = ln.bbox[3] <= band if top else ln.bbox[1] >= pd.height - band
        if not in_band:
            return
        # All lines of one row (e.g. page number left, title right) are judged together.
        row_y = ln.bbox[1] if top else ln.bbox[3]
        row = [r for r in ordered[i:] if abs((r.bbox[1] if top else r.bbox[3]) - row_y) <= 3]
        i += len(row)
        yield row


def _blocks_keeping(blocks: list[_Block], keep: Callable[[_Line], bool]) -> list[_Block]:
    """The blocks rebuilt from the lines `keep` accepts; blocks left without lines vanish."""
    kept = []
    for b in blocks:
        lines = [ln for ln in b.lines if keep(ln)]
        if lines:
            kept.append(_Block(lines, _union(ln.bbox for ln in lines), b.heading))
    return kept


def _strip_headers(pd: _PageData, neighbours: list[_PageData]) -> None:
    """Drop page numbers and running headers/footers from the outer rows of a page.

    A line counts as running text when the same digit-normalised text sits at about
    the same height on enough neighbouring pages. Only rows between the page edge and
    the first non-repeating row are candidates, so body text is never touched.
    """
    if not pd.blocks:
        return
    others = [n.margins for n in neighbours if n.margins and abs(n.height - pd.height) < 20]
    sizes = _size_histogram(pd.blocks)
    body = max(sizes, key=sizes.get)
    drop: set[int] = set()
    for top in (True, False):
        for row in _edge_rows(pd, top):
            verdicts = [_is_running(ln, top, pd, others, body) for ln in row]
            drop.update(id(ln) for ln, v in zip(row, verdicts, strict=True) if v)
            if not all(verdicts):
                break
    if not drop:
        return
    pd.running = " ".join(ln.text for b in pd.blocks for ln in b.lines
                          if id(ln) in drop and ln.bbox[3] <= pd.height * HEADER_BAND
                          and not _PAGE_NUM_RE.match(ln.text.strip()))[:200]
    kept = _blocks_keeping(pd.blocks, lambda ln: id(ln) not in drop)
    if not any(_meaningful(ln.text) for b in kept for ln in b.lines):
        # Every page repeats the same lines (a one-line form, a label sheet): that IS the
        # content. Drop only the page numbers.
        kept = _blocks_keeping(pd.blocks, lambda ln: not _PAGE_NUM_RE.match(ln.text.strip()))
    pd.blocks = kept
