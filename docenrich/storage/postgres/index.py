"""PgVectorIndex: dense top-k in SQL (HNSW, cosine), so the web process holds no vector matrix."""
from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import HALFVEC, VECTOR

from docenrich.filters import SearchFilter, combined
from docenrich.storage.filters import snippet_conditions
from docenrich.storage.tables import embedders, snippets, vectors

if TYPE_CHECKING:
    from docenrich.storage.postgres.store import PostgresStore

log = logging.getLogger(__name__)

# pgvector indexes at most 2000 dimensions of `vector` with HNSW, 4000 of `halfvec` (0.7 and newer);
# larger vectors are searched exactly.
HNSW_MAX_DIM = 2000
HALFVEC_MAX_DIM = 4000

# The graph's build settings. pgvector's defaults (m 16, ef_construction 64) made graphs that found
# 0.938-0.944 of the true top 10 at 1,000,000 clustered 1,024-d vectors whatever the search breadth
# (bench/PGVECTOR-1024.md): the build, not the search, was the limit.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128

DEFAULT_EF_SEARCH = 100
# With ef_search 0 ("auto") the breadth grows with the index: fixed at 100, recall@10 fell from
# 1.00 at 100,000 vectors to 0.71-0.89 at 1,000,000, where 400 gave 0.91-0.96 (bench/PGVECTOR.md).
AUTO_EF_VECTORS = 2500  # vectors per unit of ef_search
# pgvector caps hnsw.ef_search at 1000: an index scan never yields more rows than that.
MAX_EF_SEARCH = 1000
# Filtered sets this small are searched exactly: scoring 20,000 rows is quicker than walking a graph
# whose nodes the filter mostly rejects.
EXACT_BELOW = 20000
# With iterative index scans (pgvector 0.8), a filtered HNSW scan goes on past ef_search until it has
# k rows that pass the filter, or has visited this many tuples.
MAX_SCAN_TUPLES = 100_000


@dataclass(frozen=True)
class VectorFeatures:
    """What the database's pgvector can do: a half-precision index (0.7) and iterative index scans (0.8)."""

    version: tuple[int, ...] = (0,)

    @classmethod
    def parse(cls, text: str | None) -> VectorFeatures:
        """From pg_extension.extversion ("0.8.0"); an unknown version has no optional features."""
        parts = []
        for piece in (text or "0").split("."):
            digits = "".join(ch for ch in piece if ch.isdigit())
            parts.append(int(digits or 0))
        return cls(tuple(parts))

    @property
    def halfvec(self) -> bool:
        """Whether the HNSW index can hold float16 (half the size of float32 at any dimension)."""
        return self.version >= (0, 7)

    @property
    def iterative(self) -> bool:
        """Whether a filtered index scan can go on until enough rows pass (hnsw.iterative_scan)."""
        return self.version >= (0, 8)

    @property
    def max_dim(self) -> int:
        """The most dimensions an HNSW index takes."""
        return HALFVEC_MAX_DIM if self.halfvec else HNSW_MAX_DIM


def hnsw_index_sql(dim: int, name: str | None = None, half: bool = True, m: int = HNSW_M,
                   ef_construction: int = HNSW_EF_CONSTRUCTION) -> str:
    """DDL of the HNSW index (cosine) over the vectors of one dimension: the column is an untyped `vector`,
    so it is over the cast to halfvec(dim) (or vector(dim) on pgvector before 0.7) and partial on dim
    (embedders of different sizes share the table)."""
    dim = int(dim)
    kind, ops = ("halfvec", "halfvec_cosine_ops") if half else ("vector", "vector_cosine_ops")
    return (f"CREATE INDEX IF NOT EXISTS {name or f'vectors_hnsw_{dim}'} ON vectors USING hnsw "
            f"((embedding::{kind}({dim})) {ops}) WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
            f"WHERE dim = {dim}")


def auto_ef_search(vectors: int) -> int:
    """The default HNSW search breadth for an index of this many vectors."""
    return max(DEFAULT_EF_SEARCH, min(MAX_EF_SEARCH, vectors // AUTO_EF_VECTORS))


class PgVectorIndex:
    """The refresh/search/len shape of VectorIndex over one embedder's vectors in pgvector."""

    def __init__(self, store: PostgresStore, embedder: str, ef_search: int = 0, exact_below: int = EXACT_BELOW):
        """An index reading through `store` (ef_search 0: by its size); call refresh() for its size."""
        self.store = store
        self.embedder = embedder
        self.configured_ef = max(0, min(MAX_EF_SEARCH, int(ef_search)))
        self.exact_below = exact_below
        self._n = 0
        self.dim = 0  # 0 while empty

    def __len__(self) -> int:
        return self._n

    @property
    def ef_search(self) -> int:
        """hnsw.ef_search for an unfiltered search: as configured, else by the number of vectors."""
        return self.configured_ef or auto_ef_search(self._n)

    def refresh(self) -> None:
        """Read the embedder's vector count and dimension (one indexed row; nothing is loaded)."""
        row = self.store._first(sa.select(embedders.c.dim, embedders.c.vector_count)
                                .where(embedders.c.name == self.embedder))
        self.dim, self._n = (0, 0) if row is None else (int(row["dim"]), max(0, int(row["vector_count"])))

    def search(
        self, query: np.ndarray, k: int, document_id: str | None = None, document_ids: Collection[str] | None = None,
        filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, cosine similarity) best first within the filter (in the SQL, never to a top k)."""
        filter = combined(filter, document_id, document_ids)
        if k <= 0 or self._n == 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise ValueError(f"query has {q.shape[0]} dimensions; embedder {self.embedder!r} vectors have {self.dim}")
        where = _Where.of(filter)
        if where.conds:
            return self._filtered(q, k, where)
        if self.dim > self.features.max_dim:
            return self._exact(q, k, where)
        # An HNSW scan yields at most ef_search rows: a deeper request widens it (up to pgvector's cap).
        return self._approximate(q, k, where, max(self.ef_search, min(k, MAX_EF_SEARCH)), min(k, self._n))

    @property
    def features(self) -> VectorFeatures:
        """The store's pgvector features."""
        return self.store.vector_features

    def _filtered(self, q: np.ndarray, k: int, where: _Where) -> list[tuple[int, float]]:
        """Within the filter: exact for small sets, else an HNSW scan that iterates (pgvector 0.8) or over-fetches."""
        if not where.narrow:  # only a few kinds (tables of contents) left out: most rows qualify
            ef = max(self.ef_search, min(2 * k, MAX_EF_SEARCH))
            return self._approximate(q, k, where, ef, min(k, self._n))
        inside = int(self.store._scalar(where.apply(sa.select(sa.func.count()).select_from(vectors)
                                                    .where(vectors.c.embedder == self.embedder))))
        if inside == 0:
            return []
        if inside < self.exact_below or self.dim > self.features.max_dim:
            return self._exact(q, k, where)
        if self.features.iterative:
            # The scan goes on until k rows pass the filter: no guess at how many to ask for.
            return self._approximate(q, k, where, max(self.ef_search, min(k, MAX_EF_SEARCH)), min(k, inside))
        # Ask for as many rows as the filter is expected to leave k of, within pgvector's cap.
        ef = min(MAX_EF_SEARCH, max(self.ef_search, int(k * self._n / inside * 2)))
        return self._approximate(q, k, where, ef, min(k, inside))

    def _approximate_query(self, where: _Where, q: np.ndarray | str, limit: int) -> sa.Select:
        """The HNSW query: ORDER BY matches the partial index's expression (over halfvec where the index
        is), and dim is a literal so the planner can prove the index's WHERE dim = n. Each row also
        carries its float32 distance, which ranks the candidates the index found."""
        dim = int(self.dim)
        kind = HALFVEC(dim) if self.features.halfvec else VECTOR(dim)
        query = sa.literal_column(f"'{q}'") if isinstance(q, str) else sa.literal(q, VECTOR(dim))
        approx = sa.cast(vectors.c.embedding, kind).op("<=>", return_type=sa.Float)(sa.cast(query, kind))
        exact = vectors.c.embedding.op("<=>", return_type=sa.Float)(sa.cast(query, VECTOR(dim)))
        return where.apply(sa.select(vectors.c.snippet_id, exact.label("distance")).where(
            vectors.c.dim == sa.literal_column(str(dim)), vectors.c.embedder == self.embedder,
        )).order_by(approx).limit(limit)

    def _use_hnsw(self, conn: sa.Connection, ef: int, iterate: bool = False) -> None:
        """For this transaction only: the search breadth, and no sorted scan of another index (with
        stale statistics or a small table the planner would rather sort the embedder's rows); a
        filtered scan iterates where pgvector can (the order is restored from the float32 distances)."""
        settings = [("hnsw.ef_search", str(int(ef))), ("enable_sort", "off"), ("enable_seqscan", "off")]
        if iterate and self.features.iterative:
            settings += [("hnsw.iterative_scan", "relaxed_order"), ("hnsw.max_scan_tuples", str(MAX_SCAN_TUPLES))]
        for name, value in settings:
            conn.execute(sa.select(sa.func.set_config(name, value, True)))

    def _approximate(self, q: np.ndarray, k: int, where: _Where, ef: int,
                     expect: int) -> list[tuple[int, float]]:
        """HNSW scan (ef rows wide), its candidates ranked by their float32 distance and cut to k; the
        exact scan when it yields fewer than `expect` (too few left by the filter, or another embedder
        shares the index)."""
        iterate = bool(where.conds) and self.features.iterative
        # Twice k candidates, so the float32 distances can also fix the index's float16 ones at the cut;
        # without iterative scans, a filtered scan asks for all ef rows and keeps those that pass.
        limit = ef if where.conds and not iterate else min(MAX_EF_SEARCH, 2 * k)
        stmt = self._approximate_query(where, q, limit)
        with self.store._read() as conn:
            self._use_hnsw(conn, ef, iterate)
            rows = conn.execute(stmt).all()
        rows = sorted(rows, key=lambda r: float(r.distance))
        hits = [(int(r.snippet_id), 1.0 - float(r.distance)) for r in rows[:k]]
        return hits if len(hits) >= expect else self._exact(q, k, where)

    def plan(self, query: np.ndarray, k: int = 10) -> str:
        """EXPLAIN of the unfiltered HNSW query as search() runs it (to check the index is used)."""
        self.refresh()
        text = "[" + ",".join(repr(float(x)) for x in np.asarray(query, dtype=np.float32).reshape(-1)) + "]"
        stmt = self._approximate_query(_Where(), text, k)
        sql = str(stmt.compile(self.store.engine, compile_kwargs={"literal_binds": True}))
        with self.store._read() as conn:
            self._use_hnsw(conn, self.ef_search)
            return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))

    def _exact(self, q: np.ndarray, k: int, where: _Where) -> list[tuple[int, float]]:
        """Exact scan: the uncast expression matches no HNSW index, so every candidate row is scored."""
        distance = vectors.c.embedding.op("<=>", return_type=sa.Float)(sa.literal(q, VECTOR()))
        rows = self.store._all(where.apply(sa.select(vectors.c.snippet_id, distance.label("distance")).where(
            vectors.c.embedder == self.embedder)).order_by(distance).limit(int(k)))
        return [(int(r["snippet_id"]), 1.0 - float(r["distance"])) for r in rows]


@dataclass
class _Where:
    """A filter as conditions over `vectors`: document conditions on it, snippet ones through a join."""

    conds: list = field(default_factory=list)
    join: bool = False
    narrow: bool = False  # whether it may leave a small share of the rows

    @classmethod
    def of(cls, f: SearchFilter | None) -> _Where:
        """The conditions of a filter (none for None)."""
        if f is None:
            return cls()
        more = snippet_conditions(f.snippet_part())
        narrow = f.by_document() or f.kinds is not None or f.page_from is not None or f.page_to is not None
        return cls(snippet_conditions(f.document_part(), vectors) + more, bool(more), narrow)

    def apply(self, stmt: sa.Select) -> sa.Select:
        """stmt (over vectors) within these conditions."""
        if self.join:
            stmt = stmt.join(snippets, snippets.c.id == vectors.c.snippet_id)
        return stmt.where(*self.conds)
