"""Postings in CSR form and top-k over them: BM25 for words, a weighted sum for learned-sparse tokens.

A segment holds, for each term (a 64-bit key), the rows that contain it and each row's impact:
for BM25 the term-frequency part of the score (SQLite FTS5's formula, text and context columns
weighted 1.0 and 0.5), for sparse vectors the token's weight. A query multiplies each term's
impacts by the term's weight (BM25: its idf over the current rows) and adds them up per row with
one bincount, so its cost follows the postings of its terms, not the number of rows.
"""
from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from docenrich.storage.terms import stem

K1, B = 1.2, 0.75  # FTS5's bm25() constants
CONTEXT_WEIGHT = 0.5  # as _BM25_WEIGHTS gives the context column on SQLite
# Past this many postings per row of the index, a dense bincount over every row beats sorting them.
_DENSE_SHARE = 0.125
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
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text or "").lower())
    folded = unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))
    return [stem(w) for w in _WORD.findall(folded)]


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

    parts: tuple[int, ...]
    rows: np.ndarray
    weights: np.ndarray


def bm25_scores(segments: Sequence[Segment], phrases: Sequence[Sequence[int]], n_rows: int, alive: int,
                alive_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[PhraseHits]]:
    """(rows, scores) of the rows matching any phrase, and the hits of the multi-part phrases.

    A phrase of several parts (an identifier such as R_MAKEVARS_USER) counts only in rows that hold
    all of them, with its best part's score there: FTS5 scores a phrase as one term, at least as
    rare as its rarest part. Whether the parts stand side by side the caller checks (the postings
    keep no positions)."""
    rows_parts, weight_parts, multi = [], [], []
    for phrase in phrases:
        got = [gather(segments, key) for key in phrase]
        if any(not len(r) for r, _ in got):
            continue
        # Document frequencies count live rows only, as FTS5's do once a row is deleted.
        dfs = [len(r) if alive_mask is None else int(np.count_nonzero(alive_mask[r])) for r, _ in got]
        scored = [(r, imp * np.float32(idf(alive, df))) for (r, imp), df in zip(got, dfs, strict=True)]
        if len(scored) > 1:
            common = scored[0][0]
            for r, _ in scored[1:]:
                common = np.intersect1d(common, r, assume_unique=True)
            if not len(common):
                continue
            # Each part's rows are ascending and unique, so the kept ones line up with `common`.
            best = np.maximum.reduce([w[np.isin(r, common, assume_unique=True)] for r, w in scored])
            scored = [(common, best)]
            multi.append(PhraseHits(tuple(phrase), common.astype(np.int64), best))
        rows_parts.append(scored[0][0])
        weight_parts.append(scored[0][1])
    return (*_summed(rows_parts, weight_parts, n_rows), multi)


def has_phrase(keys: Sequence[int], parts: Sequence[int]) -> bool:
    """Whether the term keys hold the parts side by side, in order."""
    n = len(parts)
    first = parts[0]
    return any(keys[i] == first and tuple(keys[i:i + n]) == tuple(parts) for i in range(len(keys) - n + 1))


def weighted_scores(segments: Sequence[Segment], query: Sequence[tuple[int, float]],
                    n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of the dot product of sparse query weights with the stored ones."""
    rows_parts, weight_parts = [], []
    for key, weight in query:
        r, imp = gather(segments, token_key(key))
        if len(r):
            rows_parts.append(r)
            weight_parts.append(imp * np.float32(weight))
    return _summed(rows_parts, weight_parts, n_rows)


def _summed(rows_parts: list[np.ndarray], weight_parts: list[np.ndarray], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row sums of the postings' weights, for the rows that have any."""
    if not rows_parts:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    rows = np.concatenate(rows_parts)
    weights = np.concatenate(weight_parts).astype(np.float64)
    if len(rows) > _DENSE_SHARE * n_rows:
        total = np.bincount(rows, weights=weights, minlength=n_rows)
        cand = np.flatnonzero(total > 0)  # every impact and weight is positive
        return cand, total[cand]
    cand, inverse = np.unique(rows, return_inverse=True)
    return cand.astype(np.int64), np.bincount(inverse, weights=weights, minlength=len(cand))


def top_k(cand: np.ndarray, scores: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The k best (rows, scores) among the candidates the mask allows, best first (ties: lower row first)."""
    if allowed is not None:
        keep = allowed[cand]
        cand, scores = cand[keep], scores[keep]
    if k < len(cand):
        part = np.argpartition(-scores, k - 1)[:k]
        cand, scores = cand[part], scores[part]
    order = np.lexsort((cand, -scores))
    return cand[order], scores[order]
