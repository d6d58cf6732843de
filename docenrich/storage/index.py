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

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        """Vector dimension (0 while empty)."""
        return self._dim

    def refresh(self) -> None:
        """Catch up with the store: no-op if unchanged, append on inserts, full reload after removals."""
        with self._refresh_lock:
            state = self.store.vectors_state()
            if state == self._state:
                return
            if self._state is None or state[1] != self._state[1]:
                self._reload()
            else:
                self._append()

    def _reload(self) -> None:
        ids, docs, matrix, max_rowid, state = self.store._load_vectors(self.embedder, 0)
        codes: dict[str, int] = {}
        doc_codes = np.fromiter(
            (codes.setdefault(d, len(codes)) for d in docs.tolist()), dtype=np.int32, count=len(docs)
        )
        with self._lock:
            self._matrix, self._ids, self._docs, self._doc_codes = matrix, ids, doc_codes, codes
            self._n = len(ids)
            self._dim = matrix.shape[1] if len(ids) else 0
            self._max_rowid, self._state = max_rowid, state
        log.info("vector index %r reloaded: %d vectors", self.embedder, self._n)

    def _append(self) -> None:
        ids, docs, matrix, max_rowid, state = self.store._load_vectors(self.embedder, self._max_rowid)
        if state[1] != self._state[1]:
            # A removal slipped in between reading the state and loading: start over.
            self._reload()
            return
        m = len(ids)
        if m == 0:
            with self._lock:
                self._max_rowid, self._state = max_rowid, state
            return
        if self._n and matrix.shape[1] != self._dim:
            # Only possible if the embedder was deleted and re-registered with another size.
            self._reload()
            return
        n = self._n
        codes = dict(self._doc_codes)
        new_codes = np.fromiter((codes.setdefault(d, len(codes)) for d in docs.tolist()), dtype=np.int32, count=m)
        buf, id_buf, doc_buf = self._matrix, self._ids, self._docs
        if n + m > buf.shape[0] or buf.shape[1] != matrix.shape[1]:
            cap = max(n + m, 2 * buf.shape[0], 1024)
            buf = np.empty((cap, matrix.shape[1]), dtype=np.float32)
            id_buf = np.empty(cap, dtype=np.int64)
            doc_buf = np.empty(cap, dtype=np.int32)
            if n:
                buf[:n] = self._matrix[:n]
                id_buf[:n] = self._ids[:n]
                doc_buf[:n] = self._docs[:n]
        # Rows past _n are invisible to searches, so writing them outside _lock is safe.
        buf[n : n + m] = matrix
        id_buf[n : n + m] = ids
        doc_buf[n : n + m] = new_codes
        with self._lock:
            self._matrix, self._ids, self._docs, self._doc_codes = buf, id_buf, doc_buf, codes
            self._n = n + m
            self._dim = matrix.shape[1]
            self._max_rowid, self._state = max_rowid, state
        log.debug("vector index %r: +%d vectors (%d total)", self.embedder, m, n + m)

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
