"""Cutting a page's ordered blocks into snippets of about a target number of tokens."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .layout import _Block, _union

# (line text, line bbox, tokens): the unit chunks are built from.
_Item = tuple[str, tuple, float]

_HYPHENS = ("-", "\u2010", "\u00ad")
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
    heading: str | None


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
    """Accumulates lines into pieces; a heading sticks to the text that follows it."""

    def __init__(self, target: float, overlap: float, heading: str | None, count: Counter = _estimate_tokens):
        self.target = target
        self.count = count
        self.overlap = overlap
        self.pieces: list[_Piece] = []
        self.cur: list[_Item] = []
        self.cur_tok = 0.0
        self.heading = heading
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

    def _piece(self) -> _Piece:
        return _Piece(_join_lines(self.cur), _union(bb for _, bb, _ in self.cur), self.heading)

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
        """Append one block in reading order, closing pieces at the target size."""
        if not b.lines:
            return
        target = self.target
        if b.col != self.prev_col and self.cur and not self.held and self.prev_col != -1 \
                and self.cur_tok >= 0.25 * target:
            # A snippet stays within one column so its image is one tidy rectangle.
            self.flush(keep_overlap=False)
        self.prev_col = b.col
        items = _block_items(b, target, self.count)
        block_tok = sum(t for _, _, t in items)
        if b.heading:
            self._add_heading(items, block_tok)
            return
        if self.cur and not self.held and self.cur_tok + block_tok > target and self.cur_tok >= target * 0.5:
            self.flush(keep_overlap=False)  # block boundary: a clean cut needs no overlap
        for item in items:
            if self.cur and self.cur_tok + item[2] > target and self.cur_tok >= target * 0.5:
                self.flush(keep_overlap=True)
            self.cur.append(item)
            self.cur_tok += item[2]
        self.held = False

    def _add_heading(self, items: list[_Item], tokens: float) -> None:
        if self.cur and not self.held:
            self.flush(keep_overlap=False)
        heading_text = _join_lines(items)[:200]
        # Consecutive headings (chapter, then section) are kept as "outer / inner".
        if self.held and self.heading:
            self.heading = f"{self.heading.split(' / ')[-1]} / {heading_text}"
        else:
            self.heading = heading_text
        self.cur.extend(items)
        self.cur_tok += tokens
        self.held = True

    def finish(self) -> tuple[list[_Piece], str | None]:
        """All pieces, the last one included, and the heading in force at the end."""
        if self.cur:
            self.pieces.append(self._piece())
        return self.pieces, self.heading


def _chunk_page(blocks: list[_Block], target: float, overlap: float, heading: str | None,
                count: Counter = _estimate_tokens) -> tuple[list[_Piece], str | None]:
    """Merge ordered blocks into ~target-token pieces; a heading sticks to what follows.

    Works on whole lines (cheap; line ends are word ends) and only cuts a line into
    words for the overlap tail or when one line alone exceeds the target.
    """
    chunker = _Chunker(target, overlap, heading, count)
    for b in blocks:
        chunker.add(b)
    return chunker.finish()


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
    return [q for part in parts for q in _fit_one(_Piece(part, p.bbox, p.heading), count, limit, prefix)]
