"""In-memory exact vector search over one embedder's stored vectors (numpy, in the web process)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import Protocol

import numpy as np

from docenrich.filters import SearchFilter, combined

log = logging.getLogger(__name__)


class VectorSource(Protocol):
    """What VectorIndex reads from a store: change counters and vector snapshots."""

    def vectors_state(self) -> tuple[int, int]:
        """(version, epoch): version moves on any vector change, epoch only on removals."""
        ...

    def filter_document_ids(self, f: SearchFilter) -> set[str]:
        """Ids of the documents a filter's document conditions allow."""
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
        self._pages = np.empty(0, dtype=np.int32)
        self._kinds = np.empty(0, dtype=np.int16)
        self._doc_codes: dict[str, int] = {}
        self._kind_codes: dict[str, int] = {}
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
                # Nothing removed since: the new rows alone, without reading the removal log.
                changes = self.store._vector_changes(self.embedder, self._max_rowid, None)
                if changes["state"][1] == self._state[1]:
                    self._apply({**changes, "last_seq": self._removal_seq})
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
            self._pages = np.empty(0, dtype=np.int32)
            self._kinds = np.empty(0, dtype=np.int16)
            self._doc_codes, self._kind_codes, self._n, self._dim = {}, {}, 0, 0
        self._apply(changes)
        log.info("vector index %r reloaded: %d vectors", self.embedder, self._n)

    def _apply(self, changes: dict) -> None:
        """Mask the removed snippets' rows, then append the new rows (in that order: a replaced
        vector is removed and added again)."""
        n, buf = self._n, self._matrix
        cols = [self._ids, self._docs, self._pages, self._kinds]
        removed = changes["removed"]
        if removed and n:
            keep = ~np.isin(cols[0][:n], np.asarray(removed, dtype=np.int64))
            if not keep.all():
                # Into new arrays of the same capacity: the rows appended next need no copy.
                kept = int(keep.sum())
                olds = [buf, *cols]
                news = [np.empty_like(a) for a in olds]
                for old, new in zip(olds, news, strict=True):
                    np.compress(keep, old[:n], axis=0, out=new[:kept])
                buf, cols = news[0], news[1:]
                n = kept
        ids, matrix = changes["ids"], changes["matrix"]
        m = len(ids)
        codes, kind_codes = dict(self._doc_codes), dict(self._kind_codes)
        new_cols = [
            ids,
            np.fromiter((codes.setdefault(d, len(codes)) for d in changes["docs"].tolist()), dtype=np.int32, count=m),
            np.asarray(changes.get("pages", np.zeros(m)), dtype=np.int32),
            np.fromiter((kind_codes.setdefault(k, len(kind_codes)) for k in changes.get("kinds", [""] * m)),
                        dtype=np.int16, count=m),
        ]
        dim = matrix.shape[1] if m else self._dim
        if m and (n + m > buf.shape[0] or buf.shape[1] != dim):
            # A quarter of headroom after a load, doubling after that: a search that refreshes
            # the index while documents are being stored seldom waits for a copy of every row.
            cap = max(n + m + (n + m) // 4, 2 * buf.shape[0], 1024)
            grown_buf = np.empty((cap, dim), dtype=np.float32)
            grown = [np.empty(cap, dtype=a.dtype) for a in cols]
            if n and buf.shape[1] == dim:
                grown_buf[:n] = buf[:n]
                for old, new in zip(cols, grown, strict=True):
                    new[:n] = old[:n]
            elif n:
                n = 0  # another dimension: the embedder was deleted and registered again
            buf, cols = grown_buf, grown
        # Rows past _n are invisible to searches, so writing them outside _lock is safe
        # (a masked copy above is a new array, never the one searches read).
        if m:
            buf[n : n + m] = matrix
            for col, new in zip(cols, new_cols, strict=True):
                col[n : n + m] = new
        with self._lock:
            self._matrix, (self._ids, self._docs, self._pages, self._kinds) = buf, cols
            self._doc_codes, self._kind_codes = codes, kind_codes
            self._n = n + m
            self._dim = dim if self._n else 0
            self._max_rowid, self._state, self._removal_seq = changes["max_rowid"], changes["state"], changes["last_seq"]
        log.debug("vector index %r: -%d +%d vectors (%d total)", self.embedder, len(removed or ()), m, self._n)

    def search(
        self, query: np.ndarray, k: int, document_id: str | None = None, document_ids: Collection[str] | None = None,
        filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by inner product, best first, among the rows the filter (and the
        optional document or set of documents) allows: the filter is a mask, applied before the top k."""
        filter = combined(filter, document_id, document_ids)
        allowed_docs = allowed_documents(self.store, filter)
        with self._lock:
            matrix, ids, docs, n, dim = self._matrix, self._ids, self._docs, self._n, self._dim
            pages, kinds, kind_codes = self._pages, self._kinds, self._kind_codes
            codes = None if allowed_docs is None else [self._doc_codes[d] for d in allowed_docs if d in self._doc_codes]
        if k <= 0 or n == 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != dim:
            raise ValueError(f"query has {q.shape[0]} dimensions; embedder {self.embedder!r} vectors have {dim}")
        rows = None
        if codes is not None:
            if not codes:
                return []
            rows = np.flatnonzero(docs[:n] == codes[0]) if len(codes) == 1 else np.flatnonzero(np.isin(docs[:n], codes))
        if filter is not None and filter.by_snippet():
            keep = snippet_mask(filter, pages[:n] if rows is None else pages[rows],
                                 kinds[:n] if rows is None else kinds[rows], kind_codes)
            rows = np.flatnonzero(keep) if rows is None else rows[keep]
        if rows is not None:
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


def allowed_documents(store, f: SearchFilter | None) -> Collection[str] | None:
    """The documents a filter allows (None: any); a list of ids needs no query, collections, file
    names and dates ask the store."""
    if f is None or not f.by_document():
        return None
    if f.document_part() == SearchFilter(document_ids=f.document_ids):
        return f.document_ids
    return store.filter_document_ids(f.document_part())


def snippet_mask(f: SearchFilter, pages: np.ndarray, kinds: np.ndarray, kind_codes: dict[str, int]) -> np.ndarray:
    """Which of these rows the filter's kind and page conditions keep."""
    keep = np.ones(len(pages), dtype=bool)
    if f.kinds is not None:
        keep &= np.isin(kinds, [kind_codes[k] for k in f.kinds if k in kind_codes])
    elif f.excluded:
        keep &= ~np.isin(kinds, [kind_codes[k] for k in f.excluded if k in kind_codes])
    if f.page_from is not None:
        keep &= pages >= f.page_from
    if f.page_to is not None:
        keep &= pages <= f.page_to
    return keep
