"""Recognising table-of-contents and index pages: lines that end in page numbers, dot leaders."""
from __future__ import annotations

import re

from .layout import _Block

# "Installing ........ 12", "3.2 Options · · · · 45", "Appendix … iv"
# (some producers put the number, or the section number, on a line of its own).
_LEADER = re.compile(r"(?:[.\u00b7\u2026_]\s?){4,}\s*(?:\d{1,4}|[ivxlc]{1,6})?$", re.IGNORECASE)
# "tar, 12, 45–47", "R_HOME, 3", "options (see also flags), 7, 9"
_INDEX = re.compile(r"[^\W\d].*?,\s*\d{1,4}(?:\s*[-\u2013,]\s*\d{1,4})*$")
# A title line followed by a page number: "2.1 Getting started   17"
_NUMBERED = re.compile(r"[^\W\d][^.!?]{2,}?\s+(?:\d{1,4}|[ivxlc]{1,6})$", re.IGNORECASE)
_TITLE = re.compile(r"^(table of contents|contents|index|inhalt|inhaltsverzeichnis|sommaire|table des mati[eè]res|"
                    r"[ií]ndice|indice|содержание|оглавление)\b", re.IGNORECASE)

MIN_LINES = 6
_ROMAN = frozenset("ivxlcIVXLC")
_LEADER_END = frozenset(".\u00b7\u2026_")


def is_toc_page(blocks: list[_Block]) -> bool:
    """True for a contents or index page: most lines point at pages rather than say something."""
    lines = [" ".join(ln.text.split()) for b in blocks for ln in b.lines]
    lines = [ln for ln in lines if ln]
    if len(lines) < MIN_LINES:
        return False
    # The patterns end in a page number (digits or a roman numeral), or a leader: other lines skip them.
    ending = [ln for ln in lines if ln[-1].isdigit() or ln[-1] in _ROMAN]
    leaders = sum(1 for ln in lines if (ln[-1] in _LEADER_END or ln[-1] in _ROMAN or ln[-1].isdigit())
                  and _LEADER.search(ln))
    index = sum(1 for ln in ending if _INDEX.search(ln))
    numbered = sum(1 for ln in ending if _NUMBERED.search(ln))
    titled = any(_TITLE.match(ln) for ln in lines[:3])
    n = len(lines)
    if leaders >= max(4, 0.2 * n) or index >= max(6, 0.5 * n):
        return True
    # Without leaders, a page of numbered titles is a contents page only when it says so.
    return titled and (leaders + index + numbered) >= 0.5 * n
