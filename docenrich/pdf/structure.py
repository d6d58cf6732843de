"""Where text sits in its document: the heading path from the PDF outline and the page's own headings.

A snippet's path runs chapter › section › subsection › topic. The outline (bookmarks), when the
PDF has one, gives the upper levels at any point of any page, so a page batch extracted on its
own knows them too. Headings found on the page from their type (size, weight, a signature in
code type) give the levels below it. A topic's fixed sections ("Arguments", "Usage", "See also",
or any heading text that keeps coming back) are minor: they never start a topic of their own.
"""
from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass

import pymupdf

log = logging.getLogger(__name__)

SEP = " › "
# An outline entry counts from a little above its destination point: the point is often the
# top of the heading's line box, or a few points above it.
OUTLINE_TOLERANCE = 12.0
MAX_LEVELS = 6  # a deeper path keeps its first level and the innermost ones
MAX_PART_CHARS = 120
MAX_OUTLINE_ENTRIES = 200_000  # a hostile outline costs memory, not a failed document
# A heading text seen this many times in one run is a topic's fixed section, not a topic.
MINOR_REPEATS = 3

# The fixed sections of reference pages (R and Octave help, man pages, API references, Javadoc).
FIXED_SECTIONS = frozenset("""
description usage arguments argument value values details examples example see also note notes
references reference author authors source format synopsis parameters parameter params returns return
return value return values options option errors error exceptions exception throws raises since
seealso remarks remark keywords aliases alias methods fields attributes environment files bugs
exit status yields syntax inputs outputs input output default defaults warning warnings caution
overview summary signature signatures definition arguments and values type types related
""".split()) | {"see also", "return value", "return values", "exit status", "related topics", "related commands",
                 "see also:", "class", "slots", "usage notes", "value:"}

# "Chapter 17:", "15.3.3.19", "A.2", "B.", "IV." in front of a heading's words.
_NUMBERING = re.compile(r"^(?:(?:[Cc]hapter|CHAPTER|[Aa]ppendix|APPENDIX|[Pp]art|[Ss]ection)\s+[\w.]+[.:]?\s+"
                        r"|\d+(?:\.\d+)*\.?\s+|[A-Z](?:\.\d+)+\.?\s+|[A-Z]\.\s+|[IVXLC]+\.\s+)")
_NON_WORD = re.compile(r"[^\w]+")


def norm_title(text: str) -> str:
    """A heading's words without its numbering, case or punctuation, to compare headings."""
    text = text.strip()
    stripped = _NUMBERING.sub("", text, count=1)
    if stripped.strip():
        text = stripped
    return _NON_WORD.sub(" ", text.lower()).strip()


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_PART_CHARS else text[:MAX_PART_CHARS - 1].rstrip() + "…"


def bounded(path: tuple[str, ...]) -> tuple[str, ...]:
    """The path cut to MAX_LEVELS: the outermost level and the innermost ones."""
    if len(path) <= MAX_LEVELS:
        return path
    return path[:1] + path[-(MAX_LEVELS - 1):]


class Outline:
    """The PDF outline as the path of titles in force at each point of each page."""

    def __init__(self, keys: list[tuple[int, float]], paths: list[tuple[str, ...]]):
        self.keys = keys
        self.paths = paths

    @classmethod
    def of(cls, doc: pymupdf.Document) -> Outline:
        """The document's outline; empty when it has none or it cannot be read."""
        try:
            toc = doc.get_toc(simple=False)
        except Exception as exc:  # a broken outline is no reason to fail the document
            log.info("outline unreadable: %s", exc)
            toc = []
        entries: list[tuple[int, float, int, str]] = []
        for item in toc[:MAX_OUTLINE_ENTRIES]:
            level, title, page = int(item[0]), _short(str(item[1] or "")), int(item[2])
            if page < 1 or page > doc.page_count or not title:
                continue
            entries.append((page, _top_of(doc, page, item[3] if len(item) > 3 else None), level, title))
        # Sorted by position; ties keep the outline's order (a chapter before its first section).
        order = sorted(range(len(entries)), key=lambda i: (entries[i][0], entries[i][1], i))
        keys, paths, stack = [], [], []
        for i in order:
            page, y, level, title = entries[i]
            stack = [s for s in stack if s[0] < level] + [(level, title)]
            keys.append((page, y))
            paths.append(tuple(t for _, t in stack))
        return cls(keys, paths)

    def path_at(self, page: int, y: float) -> tuple[str, ...]:
        """The titles in force at (page, y), outermost first."""
        i = bisect.bisect_right(self.keys, (page, y + OUTLINE_TOLERANCE)) - 1
        return self.paths[i] if i >= 0 else ()


def _top_of(doc: pymupdf.Document, page: int, dest) -> float:
    """The destination's height from the top of the page (0.0 when it names none)."""
    point = dest.get("to") if isinstance(dest, dict) else None
    if point is None:
        return 0.0
    try:
        height = doc[page - 1].rect.height  # outline points are in PDF space: y grows upwards
        return max(0.0, height - float(point.y)) if 0 < float(point.y) <= height else 0.0
    except Exception:
        return 0.0


@dataclass
class _Heading:
    text: str
    rank: tuple
    minor: bool


class Structure:
    """The heading path as one run reads on: outline levels, then the headings found on the pages."""

    def __init__(self, outline: Outline | None = None):
        self.outline = outline
        self.outline_path: tuple[str, ...] = ()
        self.layout: list[_Heading] = []
        self.seen: dict[str, int] = {}
        self.running = ""  # the page's running header: the path while nothing else names one

    def at(self, page: int, y: float) -> bool:
        """Move the reading point to (page, y); True when an outline entry began since the last point."""
        if self.outline is None:
            return False
        path = self.outline.path_at(page, y)
        if path == self.outline_path:
            return False
        self.outline_path = path
        self.layout.clear()
        return True

    def heading(self, text: str, rank: tuple, entry: bool = False) -> bool:
        """Take a heading found on the page; True when it starts a new topic, False for a minor section."""
        key = norm_title(text)
        if key and self._in_outline(key):
            return True  # the outline's own entry, set on the page: already in the path
        count = self.seen.get(key, 0)
        self.seen[key] = count + 1
        if not entry and (key in FIXED_SECTIONS or count + 1 >= MINOR_REPEATS):
            while self.layout and self.layout[-1].minor:
                self.layout.pop()
            self.layout.append(_Heading(_short(text), rank, True))
            return False
        while self.layout and (self.layout[-1].minor or self.layout[-1].rank <= rank):
            self.layout.pop()
        self.layout.append(_Heading(_short(text), rank, False))
        return True

    def _in_outline(self, key: str) -> bool:
        """Whether a heading is one of the outline's entries in force ("abs" is also "abs Absolute value")."""
        if any(key == norm_title(t) for t in self.outline_path):
            return True
        leaf = norm_title(self.outline_path[-1]) if self.outline_path else ""
        return bool(leaf) and key.startswith(leaf + " ")

    def path(self) -> tuple[str, ...]:
        """The full path at the reading point."""
        path = self.outline_path + tuple(h.text for h in self.layout)
        return bounded(path) if path or not self.running else (self.running,)

    def topic_path(self) -> tuple[str, ...]:
        """The path without a trailing minor section: where merged sections of one topic sit."""
        layout = list(self.layout)
        while layout and layout[-1].minor:
            layout.pop()
        path = self.outline_path + tuple(h.text for h in layout)
        return bounded(path) if path or not self.running else (self.running,)


def heading_rank(size: float, bold: bool, entry: bool) -> tuple:
    """How high a heading stands: larger type above smaller, bold above regular; entries lowest."""
    return (-1.0, False) if entry else (round(size, 1), bold)
