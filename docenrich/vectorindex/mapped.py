"""Dense search over memory-mapped vector files shared by every process of a host (files.py).

Each web process maps the same files, so their pages are in memory once, and a restarted process
answers its first search as soon as it has read the manifest. Search is exact (a matrix product
over the mapped rows, the filter as a mask over the per-row columns) or, with VECTOR_INDEX=hnsw, an
HNSW graph (usearch, mapped with view=True) over the rows it was built on plus an exact scan of
the rows appended since.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from docenrich.filters import SearchFilter, combined
from docenrich.vectorindex.files import (
    COLUMNS,
    COMPACT_SHARE,
    DOCID,
    Manifest,
    VectorFiles,
    map_column,
    vector_dir,
)
from docenrich.vectorindex.memory import VectorSource, allowed_documents, snippet_mask
from docenrich.vectorindex.order import insertion_order
from docenrich.vectorindex.residency import PageBudget

log = logging.getLogger(__name__)

MODES = ("exact", "hnsw", "memory")
# A filtered HNSW search that keeps at most this many rows scores them exactly: the true top k, and
# cheaper than walking a graph whose nodes the filter mostly rejects.
EXACT_FILTER_ROWS = 50_000
# A new graph is built once the rows appended since the last one pass this share of it.
GRAPH_TAIL_SHARE = 0.1
# The graph's search breadth. At 1,000,000 clustered 1,024-d vectors, 64 found 0.86 of the true
# top 10, 256 found 0.97 and 512 0.98 (bench/SCALE.md); a search's time goes to the page faults of
# the nodes it visits, which the insertion order (order.py) keeps on few pages.
EF_SEARCH = 512
_MIN_COMPACT_ROWS = 1000
_ADD_CHUNK = 100_000  # rows gathered at a time for the graph, in its insertion order


def sync(store: VectorSource, files: VectorFiles, background: bool = True) -> Manifest:
    """Bring one embedder's files up to the vectors table (append, mask, or rebuild); the published manifest."""
    with files.locked():
        m = files.manifest()
        state = store.vectors_state()
        if m is not None and tuple(m.state) == tuple(state) and _intact(files, m):
            return m
        dim = int(store.embedder_dims().get(files.embedder, 0))
        changes = None
        if m is not None and (m.dim == dim or m.rows == 0) and _intact(files, m):
            changes = store._vector_changes(files.embedder, m.max_rowid, m.removal_seq)
        if changes is None or changes["removed"] is None:
            changes = store._vector_changes(files.embedder, 0, None)
            new = files.rebuild(changes, m, dim)
            log.info("vector files %r rebuilt from the database: %d rows", files.embedder, new.rows)
        else:
            new = files.append(replace(m, dim=dim or m.dim), changes, files.doc_codes(m))
            if (new.rows, new.deleted) == (m.rows, m.deleted):
                new = replace(new, generation=m.generation)  # only the counters moved: no remap needed
        files.publish(new)
        files.collect(new)
    if new.rows >= _MIN_COMPACT_ROWS and new.deleted > COMPACT_SHARE * new.rows:
        _run(lambda: compact(files), background)
    return new


def compact(files: VectorFiles) -> Manifest | None:
    """Rewrite the files without their masked rows when the masked share is still past the threshold."""
    with files.locked(blocking=False) as got:
        m = files.manifest() if got else None
        if m is None or m.deleted <= COMPACT_SHARE * m.rows:
            return None
        new = files.compact(m)
        files.publish(new)
        files.collect(new)
        return new


def build_graph(files: VectorFiles, min_rows: int, threads: int = 0) -> Manifest | None:
    """Build an HNSW graph over the current rows when they call for one, then switch to it."""
    from usearch.index import Index

    m = files.manifest()
    if m is None or not _wants_graph(m, min_rows):
        return None
    with files.locked(blocking=False, name="graph.lock") as got:
        if not got:
            return None
        vec = map_column(files.column(m.base, "vec"), np.float32, m.rows, m.dim)
        index = Index(ndim=m.dim, metric="ip", dtype="f16", connectivity=16, expansion_add=128, expansion_search=EF_SEARCH)
        order = insertion_order(vec, seed=m.base)
        # Keys stay row positions; only where each node lies in the graph's file follows `order`.
        for start in range(0, m.rows, _ADD_CHUNK):
            part = order[start:start + _ADD_CHUNK]
            index.add(part.astype(np.uint64), np.ascontiguousarray(vec[part]), threads=threads)
        name = f"graph-{m.base}-{m.rows}.usearch"
        index.save(str(files.path(name + f".{os.getpid()}.tmp")))
        os.replace(files.path(name + f".{os.getpid()}.tmp"), files.path(name))
    with files.locked():
        now = files.manifest()
        if now is None or now.base != m.base:
            return None  # compacted or rebuilt meanwhile: this graph's row numbers no longer hold
        new = replace(now, generation=now.generation + 1, graph=name, graph_rows=m.rows)
        files.publish(new)
        files.collect(new)
    log.info("vector graph %r built over %d rows", files.embedder, m.rows)
    return new


def _wants_graph(m: Manifest, min_rows: int) -> bool:
    return m.rows >= max(min_rows, 1) and m.rows - m.graph_rows > GRAPH_TAIL_SHARE * m.graph_rows


def _intact(files: VectorFiles, m: Manifest) -> bool:
    """Whether every column file holds at least the rows the manifest says are valid."""
    need = {"vec": m.rows * m.dim * 4, "docids": m.docs * DOCID.itemsize}
    need.update({name: m.rows * np.dtype(dtype).itemsize for name, dtype in COLUMNS})
    for name, size in need.items():
        try:
            if size and files.column(m.base, name).stat().st_size < size:
                return False
        except FileNotFoundError:
            return False
    return not m.deleted or files.path(f"deleted-{m.deleted_gen}.npy").exists()


def _run(work, background: bool) -> None:
    if not background:
        work()
        return

    def guarded() -> None:
        try:
            work()
        except Exception:  # a failed background job leaves the published files as they were
            log.exception("vector files background job failed")

    threading.Thread(target=guarded, name="vector-files", daemon=True).start()


@dataclass(frozen=True)
class View:
    """One generation, mapped: what a search reads (swapped whole, so a search never sees two generations)."""

    generation: int
    base: int
    n: int
    dim: int
    vec: np.ndarray
    ids: np.ndarray
    doc: np.ndarray
    page: np.ndarray
    kind: np.ndarray
    alive: np.ndarray | None  # None: nothing masked
    doc_codes: dict[str, int]
    kind_codes: dict[str, int]
    graph: object | None = None
    graph_rows: int = 0
    graph_name: str | None = None


EMPTY = View(0, 0, 0, 0, np.empty((0, 0), np.float32), *(np.empty(0, d) for _, d in COLUMNS), None, {}, {})


class MappedIndex:
    """Top-k by inner product over one embedder's mapped vector files; exact, or HNSW plus an exact tail."""

    def __init__(self, store: VectorSource, embedder: str, data_dir: str | Path, mode: str = "exact",
                 hnsw_min_rows: int = 100_000, page_budget: int = 0):
        """An index over DATA_DIR/vectors/<embedder>/; call refresh() to map it. page_budget: bytes a process
        may grow by through the mapped files before it gives their pages back (0: never)."""
        if mode not in ("exact", "hnsw"):
            raise ValueError(f"VECTOR_INDEX must be one of {', '.join(MODES)} (got {mode!r})")
        self.store, self.embedder, self.mode, self.hnsw_min_rows = store, embedder, mode, hnsw_min_rows
        self.files = VectorFiles(vector_dir(data_dir, embedder), embedder)
        self.pages = PageBudget(page_budget)
        self._view = EMPTY
        self._refresh_lock = threading.Lock()

    def __len__(self) -> int:
        view = self._view
        return view.n - (0 if view.alive is None else int(view.n - view.alive.sum()))

    @property
    def dim(self) -> int:
        """Vector dimension (0 while empty)."""
        return self._view.dim if len(self) else 0

    def refresh(self) -> None:
        """Catch up: sync the files when the database moved past them, then map a newer generation."""
        with self._refresh_lock:
            m = self.files.manifest()
            fresh = m is not None and tuple(m.state) == tuple(self.store.vectors_state())
            if not fresh or (m.generation != self._view.generation and not _intact(self.files, m)):
                m = sync(self.store, self.files)  # also rebuilds files found short or missing
            if m.generation != self._view.generation or m.base != self._view.base:
                self._view = self._map(m)
            if self.mode == "hnsw" and _wants_graph(m, self.hnsw_min_rows):
                _run(lambda: build_graph(self.files, self.hnsw_min_rows), background=True)

    def _map(self, m: Manifest) -> View:
        """Map a generation; files collected under us mean a newer one is published: read that instead."""
        for _ in range(3):
            try:
                return self._map_once(m)
            except FileNotFoundError:
                m = self.files.manifest() or sync(self.store, self.files)
        return self._map_once(sync(self.store, self.files))

    def _map_once(self, m: Manifest) -> View:
        old = self._view
        col = {name: map_column(self.files.column(m.base, name), dtype, m.rows) for name, dtype in COLUMNS}
        vec = map_column(self.files.column(m.base, "vec"), np.float32, m.rows, m.dim)
        alive = None
        if m.deleted:
            alive = np.ones(m.rows, dtype=bool)
            alive[self.files.deleted_positions(m)] = False
        if old.base == m.base and len(old.doc_codes) <= m.docs:
            # Same base: document codes only grow, so read just the new ones.
            codes = dict(old.doc_codes)
            extra = np.fromfile(self.files.column(m.base, "docids"), dtype=DOCID, count=m.docs)[len(codes):]
            codes.update((d.decode(), len(codes) + i) for i, d in enumerate(extra.tolist()))
        else:
            codes = self.files.doc_codes(m)
        graph, graph_rows = None, 0
        if self.mode == "hnsw" and m.graph:
            graph, graph_rows = old.graph, old.graph_rows
            if old.graph_name != m.graph:
                from usearch.index import Index

                graph, graph_rows = Index.restore(str(self.files.path(m.graph)), view=True), m.graph_rows
                graph.expansion_search = EF_SEARCH  # a restored graph starts at usearch's default
        log.debug("vector files %r: generation %d mapped (%d rows)", self.embedder, m.generation, m.rows)
        return View(m.generation, m.base, m.rows, m.dim, vec, col["ids"], col["doc"], col["page"], col["kind"],
                    alive, codes, {k: i for i, k in enumerate(m.kinds)}, graph, graph_rows,
                    m.graph if graph is not None else None)

    def search(
        self, query: np.ndarray, k: int, document_id: str | None = None, document_ids: Collection[str] | None = None,
        filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by inner product, best first, among the rows the filter allows
        (a mask over the mapped columns, applied inside the search, never to a top N)."""
        filter = combined(filter, document_id, document_ids)
        allowed_docs = allowed_documents(self.store, filter)
        view = self._view
        if k <= 0 or view.n == 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != view.dim:
            raise ValueError(f"query has {q.shape[0]} dimensions; embedder {self.embedder!r} vectors have {view.dim}")
        rows = allowed_rows(view, filter, allowed_docs)
        if rows is not None and not len(rows):
            return []
        if view.graph is not None and (rows is None or len(rows) > EXACT_FILTER_ROWS):
            found = _graph_search(view, q, k, rows)
        else:
            found = _exact(view, q, k, rows)
        self.pages.check(self.files.dir)
        return found


def allowed_rows(view: View, f: SearchFilter | None, allowed_docs) -> np.ndarray | None:
    """Positions the filter and the deletion mask allow (None: every row)."""
    n, rows = view.n, None
    if allowed_docs is not None:
        codes = [view.doc_codes[d] for d in allowed_docs if d in view.doc_codes]
        if not codes:
            return np.empty(0, dtype=np.int64)
        if len(codes) == 1:
            rows = np.flatnonzero(view.doc == codes[0])
        else:
            # A lookup table indexed by code: one pass over the column, where isin sorts.
            wanted = np.zeros(max(len(view.doc_codes), max(codes) + 1), dtype=bool)
            wanted[codes] = True
            rows = np.flatnonzero(wanted[view.doc])
    if f is not None and f.by_snippet():
        pages = view.page if rows is None else view.page[rows]
        kinds = view.kind if rows is None else view.kind[rows]
        keep = snippet_mask(f, pages, kinds, view.kind_codes)
        rows = np.flatnonzero(keep) if rows is None else rows[keep]
    if view.alive is not None:
        rows = np.flatnonzero(view.alive) if rows is None else rows[view.alive[rows]]
    return None if rows is not None and len(rows) == n else rows


def _exact(view: View, q: np.ndarray, k: int, rows: np.ndarray | None) -> list[tuple[int, float]]:
    """Exact top-k over the allowed rows (all rows when None)."""
    n = view.n
    if rows is None:
        scores, cand = view.vec @ q, None
    else:
        # Gathering many rows copies them; past a quarter of the index, scoring all rows is cheaper.
        scores = view.vec[rows] @ q if 4 * len(rows) < n else (view.vec @ q)[rows]
        cand = rows
    return _top(scores, cand, view.ids, k)


def _top(scores: np.ndarray, cand: np.ndarray | None, ids: np.ndarray, k: int) -> list[tuple[int, float]]:
    total = scores.shape[0]
    top = np.argpartition(scores, total - k)[total - k:] if k < total else np.arange(total)
    top = top[np.argsort(-scores[top], kind="stable")]
    pos = top if cand is None else cand[top]
    return [(int(ids[p]), float(scores[i])) for p, i in zip(pos.tolist(), top.tolist(), strict=True)]


def _graph_search(view: View, q: np.ndarray, k: int, rows: np.ndarray | None) -> list[tuple[int, float]]:
    """HNSW over the graph's rows (masked rows skipped, the search widened until k pass) plus the exact tail."""
    g = view.graph_rows
    allowed = None
    if rows is not None:
        allowed = np.zeros(view.n, dtype=bool)
        allowed[rows] = True
    share = 1.0 if rows is None else max(len(rows) / view.n, 1e-6)
    count = min(g, max(k, int(k / share * 1.5) + 16))
    while True:
        found = view.graph.search(q, count)
        keys = np.asarray(found.keys, dtype=np.int64)
        if allowed is not None:
            keys = keys[allowed[keys]]
        if len(keys) >= k or count >= g:
            break
        count = min(g, count * 4)
    tail = np.arange(g, view.n) if allowed is None else np.flatnonzero(allowed[g:]) + g
    cand = np.concatenate([keys[: max(k, len(keys))], tail])
    # The graph holds float16 copies: score the candidates on the float32 rows, as exact search does.
    return _top(view.vec[cand] @ q, cand, view.ids, k)
