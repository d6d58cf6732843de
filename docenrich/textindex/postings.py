"""Postings in CSR form and top-k over them: BM25 for words, a weighted sum for learned-sparse tokens.

A segment holds, for each term (a 64-bit key), the rows that contain it and each row's impact:
for BM25 the term-frequency part of the score (SQLite FTS5's formula, text and context columns
weighted 1.0 and 0.5), for sparse vectors the token's weight. A query multiplies each term's
impacts by the term's weight (BM25: its idf over the current rows) and adds them up per row with
one bincount, so its cost follows the postings of its terms, not the number of rows.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
import sys
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from docenrich.storage.terms import stem

K1, B = 1.2, 0.75  # FTS5's bm25() constants
CONTEXT_WEIGHT = 0.5  # as _BM25_WEIGHTS gives the context column on SQLite
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def term_key(term: str) -> int:
    """A term's 64-bit key (the index stores keys, not strings)."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=8).digest(), "little")


def token_key(token: int) -> int:
    """A sparse token id's key."""
    return int(token)


def index_words(text: str) -> list[str]:
    """The stemmed words of a text as the index stores them: folded (lower case, no diacritics) as
    terms.words() folds them, the whole text at once, then Porter-stemmed as FTS5's tokenizer does."""
    text = text or ""
    if text.isascii():  # nothing to normalise or fold but case: most manuals' text
        return [stem(w) for w in _WORD.findall(text.lower())]
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).lower())
    folded = unicodedata.normalize("NFC", decomposed.translate(_combining()))
    return [stem(w) for w in _WORD.findall(folded)]


@functools.cache
def _combining() -> dict[int, None]:
    """A str.translate table that drops every combining mark (what terms.fold drops, at C speed)."""
    return {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.combining(chr(cp))}


@dataclass
class Triples:
    """Postings before they are sorted into a segment: one entry per (term, row)."""

    keys: np.ndarray  # uint64
    rows: np.ndarray  # uint32, global row positions
    imp: np.ndarray  # float32

    @classmethod
    def concat(cls, parts: Sequence[Triples]) -> Triples:
        """One set of triples from several."""
        if not parts:
            return cls(np.empty(0, np.uint64), np.empty(0, np.uint32), np.empty(0, np.float32))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("keys", "rows", "imp")))


def bm25_triples(texts: Iterable[tuple[str, str]], start: int, avgdl: float | None = None) -> tuple[Triples, int]:
    """BM25 triples of rows start, start+1, ... from (text, context) pairs, and their total length.

    avgdl: the mean row length the impacts are normalised by (None: these rows' own mean)."""
    keys: dict[str, int] = {}
    kk, rr, ff, lengths = [], [], [], []
    for i, (text, context) in enumerate(texts):
        body, ctx = index_words(text), index_words(context)
        freq = Counter(body)
        for w, c in Counter(ctx).items():
            freq[w] += CONTEXT_WEIGHT * c
        for w, f in freq.items():
            key = keys.get(w)
            if key is None:
                key = keys[w] = term_key(w)
            kk.append(key)
            rr.append(i)
            ff.append(f)
        lengths.append(len(body) + len(ctx))
    dl = np.asarray(lengths, dtype=np.float32)
    total = int(dl.sum())
    mean = avgdl or (total / len(dl) if len(dl) else 1.0) or 1.0
    rows = np.asarray(rr, dtype=np.int64)
    freq = np.asarray(ff, dtype=np.float32)
    imp = freq * (K1 + 1) / (freq + K1 * (1 - B + B * dl[rows] / mean))
    return Triples(np.asarray(kk, dtype=np.uint64), (rows + start).astype(np.uint32), imp.astype(np.float32)), total


def sparse_triples(tokens: np.ndarray, weights: np.ndarray, rows: np.ndarray) -> Triples:
    """Sparse triples from flat postings: token ids, their weights, and each one's row position."""
    return Triples(np.asarray(tokens, dtype=np.int64).astype(np.uint64), np.asarray(rows, dtype=np.uint32),
                   np.asarray(weights, dtype=np.float32))


@dataclass
class Segment:
    """Sorted postings: vocab[i]'s rows are rows[off[i]:off[i + 1]] (ascending), with their impacts."""

    vocab: np.ndarray  # uint64, sorted
    off: np.ndarray  # int64, len(vocab) + 1
    rows: np.ndarray  # uint32
    imp: np.ndarray  # float32

    @classmethod
    def build(cls, t: Triples) -> Segment:
        """A segment from triples (a stable sort keeps each term's rows in ascending order)."""
        order = np.lexsort((t.rows, t.keys))
        keys = t.keys[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.empty(0, np.int64)
        return cls(keys[starts], np.r_[starts, len(keys)].astype(np.int64), t.rows[order], t.imp[order])

    def triples(self) -> Triples:
        """The segment's postings as triples again (to merge or compact)."""
        counts = np.diff(self.off)
        return Triples(np.repeat(self.vocab, counts), np.asarray(self.rows), np.asarray(self.imp))

    def postings(self, key: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, impacts) of one term (empty when the segment lacks it)."""
        i = int(np.searchsorted(self.vocab, np.uint64(key)))
        if i >= len(self.vocab) or int(self.vocab[i]) != key:
            return _NO_ROWS, _NO_IMP
        return self.rows[self.off[i]:self.off[i + 1]], self.imp[self.off[i]:self.off[i + 1]]


_NO_ROWS, _NO_IMP = np.empty(0, np.uint32), np.empty(0, np.float32)


def compacted(t: Triples, keep: np.ndarray) -> Triples:
    """Triples without the rows `keep` drops, rows renumbered to their positions among the kept ones."""
    new_pos = np.cumsum(keep, dtype=np.int64) - 1
    sel = keep[t.rows]
    return Triples(t.keys[sel], new_pos[t.rows[sel]].astype(np.uint32), t.imp[sel])


def gather(segments: Sequence[Segment], key: int) -> tuple[np.ndarray, np.ndarray]:
    """One term's rows and impacts over every segment (segments cover ascending row ranges)."""
    found = [seg.postings(key) for seg in segments]
    found = [f for f in found if len(f[0])]
    if len(found) == 1:
        return found[0]
    if not found:
        return _NO_ROWS, _NO_IMP
    return np.concatenate([r for r, _ in found]), np.concatenate([i for _, i in found])


def idf(n_rows: int, df: int) -> float:
    """FTS5's idf: log((N - n + 0.5) / (n + 0.5)), at least 1e-6 so a common term still counts."""
    return max(math.log(max(n_rows - df + 0.5, 1e-9) / (df + 0.5)), 1e-6)


@dataclass
class PhraseHits:
    """The rows where every part of a multi-part phrase occurs, and what the phrase added to each."""

    phrase: int  # its position in the query's phrases
    rows: np.ndarray
    weights: np.ndarray


class Scores:
    """Per-row sums of one query, in the calling thread's accumulator (a float32 per row, kept between
    queries: a fresh array of a million rows costs more in page faults than the sums themselves)."""

    _local = threading.local()

    def __init__(self, n_rows: int):
        """An accumulator of n_rows zeros (call release() when done)."""
        acc = getattr(self._local, "acc", None)
        if acc is None or len(acc) < n_rows:
            acc = self._local.acc = np.zeros(max(n_rows, 1), dtype=np.float32)
        self.acc = acc[:n_rows]

    def add(self, rows: np.ndarray, weights: np.ndarray) -> None:
        """Add weights to rows (each row at most once per call)."""
        self.acc[rows] += weights

    def top(self, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The k best (rows, scores) with a score above zero among the allowed rows, best first
        (ties: lower row first)."""
        acc = self.acc
        if allowed is not None:
            np.multiply(acc, allowed, out=acc)
        cand = _above_bound(acc, k)
        scores = acc[cand]
        if k < len(cand):
            part = np.argpartition(-scores, k - 1)[:k]
            cand, scores = cand[part], scores[part]
        order = np.lexsort((cand, -scores))
        return cand[order], scores[order].astype(np.float64)

    def release(self) -> None:
        """Zero the accumulator for the thread's next query."""
        self.acc.fill(0)


def _above_bound(acc: np.ndarray, k: int) -> np.ndarray:
    """The rows that can be in the top k: from a sample, a bound that about 8k rows pass (all rows
    above zero when few are)."""
    stride = max(1, len(acc) // 4096)
    sample = acc[::stride]
    positive = sample[sample > 0]
    if len(positive) * stride > 64 * k:
        rank = max(1, 8 * k // stride)
        bound = np.partition(positive, len(positive) - rank)[len(positive) - rank]
        cand = np.flatnonzero(acc >= bound)
        if len(cand) >= k:
            return cand
    return np.flatnonzero(acc > 0)


def bm25_scores(segments: Sequence[Segment], phrases: Sequence[Sequence[int]], n_rows: int, alive: int,
                alive_mask: np.ndarray | None = None,
                counts: Sequence[int] | None = None) -> tuple[Scores, list[PhraseHits]]:
    """The BM25 sums of the rows matching any phrase (a phrase given `counts[i]` times counts that
    often, as in FTS5), and the hits of the multi-part phrases.

    A phrase of several parts (an identifier such as R_MAKEVARS_USER) counts only in rows that hold
    all of them, with its best part's score there: FTS5 scores a phrase as one term, at least as
    rare as its rarest part. Whether the parts stand side by side the caller checks (the postings
    keep no positions)."""
    sums, multi = Scores(n_rows), []
    for i, phrase in enumerate(phrases):
        got = [gather(segments, key) for key in phrase]
        if any(not len(r) for r, _ in got):
            continue
        times = np.float32(counts[i] if counts else 1)
        # Document frequencies count live rows only, as FTS5's do once a row is deleted.
        dfs = [len(r) if alive_mask is None else int(np.count_nonzero(alive_mask[r])) for r, _ in got]
        scored = [(r, imp * np.float32(idf(alive, df)) * times) for (r, imp), df in zip(got, dfs, strict=True)]
        if len(scored) > 1:
            common = scored[0][0]
            for r, _ in scored[1:]:
                common = _intersect(common, r)
            if not len(common):
                continue
            best = np.maximum.reduce([w[np.searchsorted(r, common)] for r, w in scored])
            scored = [(common, best)]
            multi.append(PhraseHits(i, common.astype(np.int64), best))
        sums.add(*scored[0])
    return sums, multi


def _intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The common values of two ascending arrays of unique values."""
    if len(a) > len(b):
        a, b = b, a
    if not len(a):
        return a
    pos = np.minimum(np.searchsorted(b, a), len(b) - 1)
    return a[b[pos] == a]


def has_phrase(keys: Sequence, parts: Sequence) -> bool:
    """Whether the sequence of terms holds the parts side by side, in order."""
    n = len(parts)
    first = parts[0]
    return any(keys[i] == first and tuple(keys[i:i + n]) == tuple(parts) for i in range(len(keys) - n + 1))


def weighted_scores(segments: Sequence[Segment], query: Sequence[tuple[int, float]], n_rows: int, k: int,
                    allowed: np.ndarray | None = None) -> Scores:
    """The dot products of sparse query weights with the stored ones, exact for every row that can be
    in the top k among the allowed rows (others may lack the commonest terms' small shares).

    Learned-sparse queries carry tokens found in nearly every row ("the", "of") with small weights:
    summing their postings would cost most of a query. The rarer terms are summed first; then, while
    the commonest left could still lift a row into the top k, the one that could lift it most is
    summed too; the rest are added only to the rows within reach of the top k (MaxScore)."""
    sums = Scores(n_rows)
    terms = []
    for token, weight in query:
        rows, imp = gather(segments, token_key(token))
        if len(rows):
            terms.append((rows, imp * np.float32(weight)))
    terms.sort(key=lambda t: len(t[0]))
    done = 0
    while terms and (done + len(terms[0][0]) <= n_rows // 2 or not done):
        rows, weights = terms.pop(0)
        sums.add(rows, weights)
        done += len(rows)
    if allowed is not None:
        np.multiply(sums.acc, allowed, out=sums.acc)
    bounds = [float(w.max()) for _, w in terms]
    while terms:
        reach = _kth(sums.acc, k) - sum(bounds)
        if reach > 0:
            within = np.flatnonzero(sums.acc >= reach)
            if len(within) <= n_rows // 8:
                for rows, weights in terms:
                    pos = np.minimum(np.searchsorted(rows, within), len(rows) - 1)
                    hit = rows[pos] == within
                    sums.acc[within[hit]] += weights[pos[hit]]
                break
        i = int(np.argmax(bounds))
        sums.add(*terms.pop(i))
        bounds.pop(i)
        if allowed is not None:
            np.multiply(sums.acc, allowed, out=sums.acc)
    return sums


def _kth(acc: np.ndarray, k: int) -> float:
    """The k-th largest value (0 when fewer than k are above zero)."""
    cand = _above_bound(acc, k)
    if len(cand) < k:
        return 0.0
    values = acc[cand]
    return float(np.partition(values, len(values) - k)[len(values) - k])
