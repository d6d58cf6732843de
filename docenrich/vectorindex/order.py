"""The order in which an HNSW graph's rows are inserted, chosen so that neighbours lie close in its file.

usearch stores nodes in insertion order, and a search over a mapped graph pays a page fault for
every page of the file it reads that the process has not mapped (a few microseconds each, and
the page budget of residency.py gives mapped pages back). Rows inserted in file order lie
wherever their documents put them, so a search's few thousand nodes lie on as many pages.
Inserting a random share of the rows first, then the rest grouped by a two-level k-means of a
sample, puts a search's neighbourhood on a few runs of pages. The random share comes first
because a graph built from rows in clustered order alone loses its long links: at a million
clustered rows, recall@10 fell from 0.985 to 0.77; with a fifth inserted first it was 0.981 and
the search faulted half the pages (bench/SCALE.md).
"""
from __future__ import annotations

import numpy as np

# Rows inserted first, in random order: the graph's long-range links.
SKELETON_SHARE = 0.2
# Below this many rows the graph's file is small enough that order does not matter.
MIN_ROWS = 20_000
_SAMPLE = 40_000
_TOP = 32
_PER_LEAF = 20  # sampled rows per second-level centre
_CHUNK = 100_000


def insertion_order(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """A permutation of the rows: a random skeleton first, the rest grouped by cluster."""
    n = len(vectors)
    if n < MIN_ROWS:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    sample = np.asarray(vectors[np.sort(rng.choice(n, min(n, _SAMPLE), replace=False))], dtype=np.float32)
    top = kmeans(sample, _TOP, rng)
    assigned = np.argmax(sample @ top.T, axis=1)
    leaves = [kmeans(sample[assigned == j], max(1, int((assigned == j).sum()) // _PER_LEAF), rng)
              for j in range(len(top))]
    leaf = np.empty(n, dtype=np.int64)
    for start in range(0, n, _CHUNK):
        leaf[start:start + _CHUNK] = _leaf_of(np.asarray(vectors[start:start + _CHUNK], dtype=np.float32), top, leaves)
    grouped = np.argsort(leaf, kind="stable")
    skeleton = np.zeros(n, dtype=bool)
    skeleton[rng.choice(n, int(SKELETON_SHARE * n), replace=False)] = True
    first = rng.permutation(np.flatnonzero(skeleton))
    return np.concatenate([first, grouped[~skeleton[grouped]]])


def _leaf_of(x: np.ndarray, top: np.ndarray, leaves: list[np.ndarray]) -> np.ndarray:
    """The second-level cluster of each row, numbered so that one top-level cluster's leaves are adjacent."""
    a = np.argmax(x @ top.T, axis=1)
    out = np.empty(len(x), dtype=np.int64)
    width = max(len(c) for c in leaves)
    for j in np.unique(a):
        rows = a == j
        out[rows] = j * width + np.argmax(x[rows] @ leaves[j].T, axis=1)
    return out


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, rounds: int = 8) -> np.ndarray:
    """k unit centres of the rows by spherical k-means (inner product), a few rounds."""
    k = max(1, min(k, len(x)))
    if len(x) == 0:
        return np.zeros((1, x.shape[1]), dtype=np.float32)
    centres = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(rounds):
        a = np.argmax(x @ centres.T, axis=1)
        onehot = np.zeros((k, len(x)), dtype=np.float32)
        onehot[a, np.arange(len(x))] = 1.0
        sums = onehot @ x
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        # A centre that lost all its rows keeps its place rather than becoming zero.
        centres = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centres).astype(np.float32)
    return centres
