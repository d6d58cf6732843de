"""Fusing ranked candidate lists (dense, lexical, sparse) into one ranking."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

Ranked = Sequence[tuple[int, float]]  # (snippet id, score), best first

# The usual reciprocal-rank constant: it damps the difference between rank 1 and rank 5 so
# that agreement between retrievers outweighs one retriever's confidence.
RRF_K = 60


def rrf(lists: Mapping[str, Ranked], weights: Mapping[str, float] | None = None, k: int = RRF_K
        ) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: each list adds weight / (k + rank) to the snippets it ranks."""
    scores: dict[int, float] = {}
    for name, ranked in lists.items():
        w = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, (sid, _) in enumerate(ranked, start=1):
            scores[sid] = scores.get(sid, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def weighted(lists: Mapping[str, Ranked], weights: Mapping[str, float] | None = None
             ) -> list[tuple[int, float]]:
    """Weighted sum of scores min-max normalised per list; a snippet a list misses scores 0 there."""
    scores: dict[int, float] = {}
    for name, ranked in lists.items():
        if not ranked:
            continue
        w = 1.0 if weights is None else weights.get(name, 1.0)
        values = [score for _, score in ranked]
        low, high = min(values), max(values)
        span = high - low
        for sid, score in ranked:
            norm = (score - low) / span if span > 0 else 1.0
            scores[sid] = scores.get(sid, 0.0) + w * norm
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def ranks(lists: Mapping[str, Ranked]) -> dict[int, dict[str, int]]:
    """For each snippet, its 1-based rank in each list that holds it."""
    out: dict[int, dict[str, int]] = {}
    for name, ranked in lists.items():
        for rank, (sid, _) in enumerate(ranked, start=1):
            out.setdefault(sid, {})[name] = rank
    return out
