"""Cutting a page's ordered blocks into snippets of about a target number of tokens."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .layout import _Block, _union
from .structure import SEP, Structure, heading_rank

# (line text, line bbox, tokens): the unit chunks are built from.
_Item = tuple[str, tuple, float]

_HYPHENS = ("-", "\u2010", "\u00ad")
# A minor section (a topic's "Arguments", "Examples") joins the snippet before it while that
# snippet holds less than this share of the target: no 20-word snippets of one usage line.
MERGE_FRACTION = 0.6
# A numbered run-in heading ("3.6.31 digits(x, {b}).") opens a topic inside a paragraph.
_RUN_IN = re.compile(r"^(?:\d+\.)+\d+\.?\s+\S")
Counter = Callable[[str], float]


def _join_hyphen(prev: str, nxt: str) -> bool:
    return len(prev) >= 2 and prev[-1] in "-\u2010\u00ad" and prev[-2].isalpha() and nxt[:1].isalpha()


def _joined(prev: str, nxt: str) -> str:
    # "exam-" + "ple" → "example"; "Hausdorff-" + "Räume" keeps the hyphen of a compound.
    if prev[-1] == "\u00ad" or nxt[0].islower():
        return prev[:-1] + nxt
    return prev + nxt


def _estimate_tokens(text: str) -> float:
    """Approximate subword tokens: ~1.3 per word, at least one per 4 characters."""
    return max(1.3 * (text.count(" ") + 1), len(text) / 4.0)


@dataclass
class _Piece:
    text: str
    bbox: tuple[float, float, float, float]
    path: tuple[str, ...] = ()

    @property
    def heading(self) -> str | None:
        """The heading path as one string, outermost first."""
        return SEP.join(self.path) or None


def _join_lines(items: list[_Item]) -> str:
    out = ""
    for text, _, _ in items:
        if not out:
            out = text
        elif _join_hyphen(out, text):
            out = _joined(out, text)
        else:
            out = out + " " + text
    return out


def _split_long_line(text: str, bbox: tuple, target: float, count: Counter = _estimate_tokens) -> list[_Item]:
    """Cut a line longer than the target at word boundaries (characters for CJK runs)."""
    limit = max(8, int(target * 4 * 0.8))
    words: list[str] = []
    for w in text.split(" "):
        # Scripts without spaces arrive as one giant "word": the only case cut inside.
        if len(w) > limit:
            words.extend(w[i:i + limit] for i in range(0, len(w), limit))
        else:
            words.append(w)
    out: list[_Item] = []
    cur: list[str] = []
    for w in words:
        if cur and count(" ".join(cur + [w])) > target * 0.8:
            t = " ".join(cur)
            out.append((t, bbox, count(t)))
            cur = []
        cur.append(w)
    if cur:
        t = " ".join(cur)
        out.append((t, bbox, count(t)))
    return out


def _block_items(b: _Block, target: float, count: Counter = _estimate_tokens) -> list[_Item]:
    """A block's lines as items, lines too long for one snippet cut into several."""
    items: list[_Item] = []
    for ln in b.lines:
        tok = count(ln.text)
        if tok > target * 0.8:
            items.extend(_split_long_line(ln.text, ln.bbox, target, count))
        else:
            items.append((ln.text, ln.bbox, tok))
    return items


def _last_words(text: str, budget: float, count: Counter = _estimate_tokens) -> list[str]:
    """The longest run of the line's last words within `budget` tokens, never the whole line."""
    words = text.split(" ")
    part: list[str] = []
    for w in reversed(words[1:]):  # never the whole line: it did not fit
        t = count(" ".join([w] + part))
        if t > budget:
            break
        part.insert(0, w)
    return part


class _Chunker:
    """Accumulates lines into pieces; a heading sticks to the text that follows it.

    A piece never spans two topics: an outline entry or a heading that starts a topic closes
    it. A topic's minor sections join the piece before them while it is small.
    """

    def __init__(self, target: float, overlap: float, struct: Structure, page: int = 0,
                 count: Counter = _estimate_tokens):
        self.target = target
        self.count = count
        self.overlap = overlap
        self.pieces: list[_Piece] = []
        self.cur: list[_Item] = []
        self.cur_tok = 0.0
        self.struct = struct
        self.page = page
        self.path = struct.path()       # where the piece being built sits
        self.held = False               # the chunk ends in a heading: must take more text
        self.prev_col: int | None = -1

    def flush(self, keep_overlap: bool) -> None:
        """Close the current piece; with keep_overlap its tail also opens the next one."""
        if not self.cur:
            return
        carry: list[_Item] = []
        if len(self.cur) > 1 and self.cur[-1][0][-1:] in _HYPHENS:
            # Never cut between the halves of a hyphenated word: move the line on.
            carry = [self.cur.pop()]
        self.pieces.append(self._piece())
        tail = self._overlap_tail(carry) if keep_overlap and self.overlap > 0 else []
        self.cur = tail + carry
        self.cur_tok = sum(t for _, _, t in self.cur)
        self.path = self.struct.path()

    def _piece(self) -> _Piece:
        return _Piece(_join_lines(self.cur), _union(bb for _, bb, _ in self.cur), self.path)

    def _overlap_tail(self, carry: list[_Item]) -> list[_Item]:
        """The last lines (or words) of the current piece that fit the overlap budget, in order."""
        budget = self.overlap - sum(t for _, _, t in carry)
        tail: list[_Item] = []
        for text, bb, tok in reversed(self.cur):
            if tok <= budget:
                tail.append((text, bb, tok))
                budget -= tok
                continue
            part = _last_words(text, budget, self.count)
            if part:
                t = " ".join(part)
                tail.append((t, bb, self.count(t)))
            break
        return tail[::-1]

    def add(self, b: _Block) -> None:
        """Append one block in reading order, closing pieces at the target size and at topics."""
        if not b.lines:
            return
        if self.struct.at(self.page, b.bbox[1]):
            # An outline entry begins here: a new topic, whatever the size of the piece.
            if self.cur and not self.held:
                self.flush(keep_overlap=False)
            if not self.cur or self.held:
                self.path = self.struct.path()
        target = self.target
        if b.col != self.prev_col and self.cur and not self.held and self.prev_col != -1 \
                and self.cur_tok >= 0.25 * target:
            # A snippet stays within one column so its image is one tidy rectangle.
            self.flush(keep_overlap=False)
        self.prev_col = b.col
        items = _block_items(b, target, self.count)
        block_tok = sum(t for _, _, t in items)
        if b.heading:
            self._add_heading(b, items, block_tok)
            return
        first = b.lines[0]
        # Bold words that open a paragraph; MuPDF may set them as a line of their own.
        run_in = first.lead_bold or (first.text if first.bold and len(b.lines) > 1 else "")
        if run_in and _RUN_IN.match(run_in):
            self._open_topic(run_in.rstrip(" .:"), heading_rank(b.lines[0].size, True, False))
        if self.cur and not self.held and self.cur_tok + block_tok > target and self.cur_tok >= target * 0.5:
            self.flush(keep_overlap=False)  # block boundary: a clean cut needs no overlap
        for item in items:
            if self.cur and self.cur_tok + item[2] > target and self.cur_tok >= target * 0.5:
                self.flush(keep_overlap=True)
            self.cur.append(item)
            self.cur_tok += item[2]
        self.held = False

    def _add_heading(self, b: _Block, items: list[_Item], tokens: float) -> None:
        text = _join_lines(items)
        size = max(ln.size for ln in b.lines)
        topic = self.struct.heading(text, heading_rank(size, all(ln.bold for ln in b.lines), b.entry), b.entry)
        if self.cur and not self.held and (topic or self.cur_tok >= self.target * MERGE_FRACTION):
            self.flush(keep_overlap=False)
        if not self.cur or self.held:
            self.path = self.struct.path()  # the piece starts at this heading
        else:
            self.path = self.struct.topic_path()  # a minor section merged into its topic's piece
        self.cur.extend(items)
        self.cur_tok += tokens
        self.held = True

    def _open_topic(self, text: str, rank: tuple) -> None:
        """A run-in heading: the paragraph it opens starts a piece under it when it names a topic."""
        if self.struct.heading(text, rank) and self.cur and not self.held:
            self.flush(keep_overlap=False)
        if not self.cur or self.held:
            self.path = self.struct.path()

    def finish(self) -> list[_Piece]:
        """All pieces, the last one included."""
        if self.cur:
            self.pieces.append(self._piece())
        return self.pieces


def _chunk_page(blocks: list[_Block], target: float, overlap: float, struct: Structure, page: int = 0,
                count: Counter = _estimate_tokens) -> list[_Piece]:
    """Merge ordered blocks into ~target-token pieces; a heading sticks to what follows.

    Works on whole lines (cheap; line ends are word ends) and only cuts a line into
    words for the overlap tail or when one line alone exceeds the target. `struct` carries
    the heading path from page to page.
    """
    chunker = _Chunker(target, overlap, struct, page, count)
    for b in blocks:
        chunker.add(b)
    return chunker.finish()


def path_at(pieces: list[_Piece], y: float, default: tuple[str, ...]) -> tuple[str, ...]:
    """The path of the last piece that starts above `y` (a table's or figure's place), else `default`."""
    found = default
    for p in pieces:
        if p.bbox[1] <= y:
            found = p.path
    return found


def fit_pieces(pieces: list[_Piece], count: Counter, limit: int, prefix: Callable[[_Piece], str]) -> list[_Piece]:
    """Pieces whose embedded text (prefix + text) fits `limit` tokens, oversized ones cut at words."""
    out: list[_Piece] = []
    for p in pieces:
        out.extend(_fit_one(p, count, limit, prefix))
    return out


def _fit_one(p: _Piece, count: Counter, limit: int, prefix: Callable[[_Piece], str]) -> list[_Piece]:
    head = prefix(p)
    if count(f"{head}\n{p.text}" if head else p.text) <= limit:
        return [p]
    words = p.text.split(" ")
    if len(words) < 2:
        # One unbroken run (a CJK line, a long URL): cut it by characters.
        half = max(1, len(p.text) // 2)
        parts = [p.text[:half], p.text[half:]]
    else:
        parts = [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :])]
    if not parts[1]:
        return [p]  # nothing left to cut: the model truncates this one character run
    return [q for part in parts for q in _fit_one(_Piece(part, p.bbox, p.path), count, limit, prefix)]
