"""In-memory exact vector search over one embedder's stored vectors (numpy, in the web process)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class VectorSource(Protocol):
    """What VectorIndex reads from a store: change counters and vector snapshots."""

    def vectors_state(self) -> tuple[int, int]:
        """(version, epoch): version moves on any vector change, epoch only on removals."""
        ...

    def _load_vectors(
        self, embedder: str, after_rowid: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, tuple[int, int]]:
        """(snippet ids, document ids, matrix, max rowid, (version, epoch)) from one snapshot."""
        ...

    def _vector_changes(self, embedder: str, after_rowid: int, after_seq: int | None) -> dict:
        """From one snapshot: added rows, removed snippet ids (or None), last removal seq, counters."""
        ...


class VectorIndex:
    """Exact top-k by inner product over one embedder's stored vectors, held in memory (numpy) in the web process."""

    def __init__(self, store: VectorSource, embedder: str):
        """An empty index; call refresh() to load."""
        self.store = store
        self.embedder = embedder
        # _lock guards the snapshot fields (held for microseconds); _refresh_lock serialises
        # refreshes so a slow reload never blocks searches.
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._matrix = np.empty((0, 0), dtype=np.float32)  # capacity rows; only [:_n] valid
        self._ids = np.empty(0, dtype=np.int64)
        self._docs = np.empty(0, dtype=np.int32)
        self._doc_codes: dict[str, int] = {}
        self._n = 0
        self._dim = 0
        self._state: tuple[int, int] | None = None
        self._max_rowid = 0
        self._removal_seq = 0

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        """Vector dimension (0 while empty)."""
        return self._dim

    def refresh(self) -> None:
        """Catch up with the store: no-op if unchanged; drop removed rows and append new ones.

        A removal costs a mask over the rows in memory, not a reload of every vector from the
        database; only a first load (or a removal log that no longer reaches back) reads them all.
        """
        with self._refresh_lock:
            state = self.store.vectors_state()
            if state == self._state:
                return
            if self._state is None:
                self._reload()
                return
            if state[1] == self._state[1]:
                ids, docs, matrix, max_rowid, seen = self.store._load_vectors(self.embedder, self._max_rowid)
                if seen[1] == self._state[1]:
                    self._apply({"removed": None, "last_seq": self._removal_seq, "ids": ids, "docs": docs,
                                 "matrix": matrix, "max_rowid": max_rowid, "state": seen})
                    return
            changes = self.store._vector_changes(self.embedder, self._max_rowid, self._removal_seq)
            if changes["removed"] is None:
                self._reload()
                return
            self._apply(changes)

    def _reload(self) -> None:
        changes = self.store._vector_changes(self.embedder, 0, None)
        with self._lock:
            self._matrix = np.empty((0, 0), dtype=np.float32)
            self._ids = np.empty(0, dtype=np.int64)
            self._docs = np.empty(0, dtype=np.int32)
            self._doc_codes, self._n, self._dim = {}, 0, 0
        self._apply(changes)
        log.info("vector index %r reloaded: %d vectors", self.embedder, self._n)

    def _apply(self, changes: dict) -> None:
        """Mask the removed snippets' rows, then append the new rows (in that order: a replaced
        vector is removed and added again)."""
        n, buf, id_buf, doc_buf = self._n, self._matrix, self._ids, self._docs
        removed = changes["removed"]
        if removed and n:
            keep = ~np.isin(id_buf[:n], np.asarray(removed, dtype=np.int64))
            if not keep.all():
                # Into new arrays of the same capacity: the rows appended next need no copy.
                kept = int(keep.sum())
                grown = np.empty_like(buf), np.empty_like(id_buf), np.empty_like(doc_buf)
                for old, new in zip((buf, id_buf, doc_buf), grown, strict=True):
                    np.compress(keep, old[:n], axis=0, out=new[:kept])
                buf, id_buf, doc_buf = grown
                n = kept
        ids, docs, matrix = changes["ids"], changes["docs"], changes["matrix"]
        m = len(ids)
        codes = dict(self._doc_codes)
        new_codes = np.fromiter((codes.setdefault(d, len(codes)) for d in docs.tolist()), dtype=np.int32, count=m)
        dim = matrix.shape[1] if m else self._dim
        if m and (n + m > buf.shape[0] or buf.shape[1] != dim):
            # A quarter of headroom after a load, doubling after that: a search that refreshes
            # the index while documents are being stored seldom waits for a copy of every row.
            cap = max(n + m + (n + m) // 4, 2 * buf.shape[0], 1024)
            grown = np.empty((cap, dim), dtype=np.float32), np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int32)
            if n and buf.shape[1] == dim:
                grown[0][:n], grown[1][:n], grown[2][:n] = buf[:n], id_buf[:n], doc_buf[:n]
            elif n:
                n = 0  # another dimension: the embedder was deleted and registered again
            buf, id_buf, doc_buf = grown
        # Rows past _n are invisible to searches, so writing them outside _lock is safe
        # (a masked copy above is a new array, never the one searches read).
        if m:
            buf[n : n + m], id_buf[n : n + m], doc_buf[n : n + m] = matrix, ids, new_codes
        with self._lock:
            self._matrix, self._ids, self._docs, self._doc_codes = buf, id_buf, doc_buf, codes
            self._n = n + m
            self._dim = dim if self._n else 0
            self._max_rowid, self._state, self._removal_seq = changes["max_rowid"], changes["state"], changes["last_seq"]
        log.debug("vector index %r: -%d +%d vectors (%d total)", self.embedder, len(removed or ()), m, self._n)

    def search(
        self, query: np.ndarray, k: int, document_id: str | None = None, document_ids: Collection[str] | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by inner product, best first; optionally within one document or a set."""
        if document_id is not None:
            document_ids = {document_id} if document_ids is None or document_id in document_ids else set()
        with self._lock:
            matrix, ids, docs, n, dim = self._matrix, self._ids, self._docs, self._n, self._dim
            codes = None if document_ids is None else [self._doc_codes[d] for d in document_ids if d in self._doc_codes]
        if k <= 0 or n == 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != dim:
            raise ValueError(f"query has {q.shape[0]} dimensions; embedder {self.embedder!r} vectors have {dim}")
        if codes is not None:
            if not codes:
                return []
            rows = np.flatnonzero(docs[:n] == codes[0]) if len(codes) == 1 else np.flatnonzero(np.isin(docs[:n], codes))
            # Gathering many rows copies them; past a quarter of the index, scoring all rows is cheaper.
            scores = matrix[rows] @ q if 4 * len(rows) < n else (matrix[:n] @ q)[rows]
            cand_ids = ids[rows]
        else:
            scores = matrix[:n] @ q
            cand_ids = ids[:n]
        total = scores.shape[0]
        if k < total:
            top = np.argpartition(scores, total - k)[total - k :]
        else:
            top = np.arange(total)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(cand_ids[i]), float(scores[i])) for i in top]
