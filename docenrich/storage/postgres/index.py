"""PgVectorIndex: dense top-k in SQL (HNSW, cosine), so the web process holds no vector matrix."""
from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from docenrich.filters import SearchFilter
from docenrich.storage.filters import snippet_conditions
from docenrich.storage.postgres.schema import HNSW_MAX_DIM

if TYPE_CHECKING:
    from docenrich.storage.postgres.store import PostgresStore

log = logging.getLogger(__name__)

DEFAULT_EF_SEARCH = 100
# With ef_search 0 ("auto") the breadth grows with the index: fixed at 100, recall@10 fell from
# 1.00 at 100,000 vectors to 0.71-0.89 at 1,000,000, where 400 gave 0.91-0.96 (bench/PGVECTOR.md).
AUTO_EF_VECTORS = 2500  # vectors per unit of ef_search
# pgvector caps hnsw.ef_search at 1000: an index scan never yields more rows than that.
MAX_EF_SEARCH = 1000
# Filtered sets this small are searched exactly: pgvector 0.6 has no iterative index scans, so
# an HNSW scan filtered afterwards may return fewer than k rows of a small document set.
EXACT_BELOW = 20000


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
        self._dim = 0

    def __len__(self) -> int:
        return self._n

    @property
    def ef_search(self) -> int:
        """hnsw.ef_search for an unfiltered search: as configured, else by the number of vectors."""
        return self.configured_ef or auto_ef_search(self._n)

    @property
    def dim(self) -> int:
        """Vector dimension (0 while empty)."""
        return self._dim

    def refresh(self) -> None:
        """Read the embedder's vector count and dimension (one indexed row; nothing is loaded)."""
        row = self.store._q("SELECT dim, vector_count FROM embedders WHERE name = %s", (self.embedder,)).fetchone()
        self._dim, self._n = (0, 0) if row is None else (int(row["dim"]), max(0, int(row["vector_count"])))

    def search(
        self, query: np.ndarray, k: int, document_id: str | None = None, document_ids: Collection[str] | None = None,
        filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, cosine similarity) best first, among the rows the filter (and the optional
        document or set of documents) allows: the filter is part of the SQL, never applied to a top k."""
        if document_ids is not None:
            filter = replace(filter or SearchFilter(), document_ids=tuple(
                d for d in sorted(document_ids) if filter is None or filter.document_ids is None
                or d in filter.document_ids))
        if document_id is not None:
            filter = (filter or SearchFilter()).within_document(document_id)
        if k <= 0 or self._n == 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self._dim:
            raise ValueError(f"query has {q.shape[0]} dimensions; embedder {self.embedder!r} vectors have {self._dim}")
        where = _Where.of(filter)
        if where.conds:
            return self._filtered(q, k, where)
        if self._dim > HNSW_MAX_DIM:
            return self._exact(q, k, where)
        # An HNSW scan yields at most ef_search rows: a deeper request widens it (up to pgvector's cap).
        hits = self._approximate(q, k, where, max(self.ef_search, min(k, MAX_EF_SEARCH)))
        # Fewer than k rows: another embedder of the same size shares the index; fall back to exact.
        return hits if len(hits) >= min(k, self._n) else self._exact(q, k, where)

    def _filtered(self, q: np.ndarray, k: int, where: _Where) -> list[tuple[int, float]]:
        """Within the filter: exact for small sets, else an over-fetching HNSW scan."""
        if not where.narrow:  # only a few kinds (tables of contents) left out: most rows qualify
            hits = self._approximate(q, k, where, max(self.ef_search, min(2 * k, MAX_EF_SEARCH)))
            return hits if len(hits) >= min(k, self._n) else self._exact(q, k, where)
        row = self.store._q(f"SELECT count(*) AS n FROM vectors v {where.join} WHERE v.embedder = %s "
                            f"AND {' AND '.join(where.conds)}", (self.embedder, *where.args)).fetchone()
        inside = int(row["n"])
        if inside == 0:
            return []
        if inside < self.exact_below or self._dim > HNSW_MAX_DIM:
            return self._exact(q, k, where)
        # Ask for as many rows as the filter is expected to leave k of, within pgvector's cap.
        ef = min(MAX_EF_SEARCH, max(self.ef_search, int(k * self._n / inside * 2)))
        hits = self._approximate(q, k, where, ef)
        return hits if len(hits) >= min(k, inside) else self._exact(q, k, where)

    def _approximate_sql(self, where: _Where) -> str:
        """The HNSW query: ORDER BY matches the partial index's expression, and dim is a literal
        so the planner can prove the index's WHERE dim = n."""
        dim = int(self._dim)
        conds = " AND ".join([f"v.dim = {dim}", "v.embedder = %s", *where.conds])
        return (f"SELECT v.snippet_id, v.embedding::vector({dim}) <=> %s::vector({dim}) AS distance FROM vectors v "
                f"{where.join} WHERE {conds} ORDER BY v.embedding::vector({dim}) <=> %s::vector({dim}) LIMIT %s")

    @staticmethod
    def _use_hnsw(conn, ef: int) -> None:
        """For this transaction only: the search breadth, and no sorted scan of another index (with
        stale statistics or a small table the planner would rather sort the embedder's rows)."""
        for name, value in (("hnsw.ef_search", str(int(ef))), ("enable_sort", "off"), ("enable_seqscan", "off")):
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))

    def _approximate(self, q: np.ndarray, k: int, where: _Where, ef: int) -> list[tuple[int, float]]:
        """HNSW scan of up to ef rows (k when unfiltered), best first, cut to k."""
        args = [q, self.embedder, *where.args, q, ef if where.conds else k]
        with self.store._read_committed() as conn:
            self._use_hnsw(conn, ef)
            rows = conn.execute(self._approximate_sql(where), args).fetchall()
        return [(int(r["snippet_id"]), 1.0 - float(r["distance"])) for r in rows[:k]]

    def plan(self, query: np.ndarray, k: int = 10) -> str:
        """EXPLAIN of the unfiltered HNSW query as search() runs it (to check the index is used)."""
        self.refresh()
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        with self.store._read_committed() as conn:
            self._use_hnsw(conn, self.ef_search)
            rows = conn.execute("EXPLAIN " + self._approximate_sql(_Where()), (q, self.embedder, q, k)).fetchall()
        return "\n".join(r["QUERY PLAN"] for r in rows)

    def _exact(self, q: np.ndarray, k: int, where: _Where) -> list[tuple[int, float]]:
        """Exact scan: the uncast expression matches no HNSW index, so every candidate row is scored."""
        conds = " AND ".join(["v.embedder = %s", *where.conds])
        rows = self.store._q(
            f"""SELECT v.snippet_id, v.embedding <=> %s AS distance FROM vectors v {where.join} WHERE {conds}
                ORDER BY distance LIMIT %s""",
            (q, self.embedder, *where.args, int(k)),
        ).fetchall()
        return [(int(r["snippet_id"]), 1.0 - float(r["distance"])) for r in rows]


@dataclass
class _Where:
    """A filter as SQL over `vectors v`: document conditions on v, snippet ones through a join."""

    conds: list[str] = field(default_factory=list)
    args: list = field(default_factory=list)
    join: str = ""
    narrow: bool = False  # whether it may leave a small share of the rows

    @classmethod
    def of(cls, f: SearchFilter | None) -> _Where:
        """The conditions of a filter (none for None)."""
        if f is None:
            return cls()
        conds, args = snippet_conditions(f.document_part(), "%s", alias="v")
        more, more_args = snippet_conditions(f.snippet_part(), "%s", alias="s")
        join = "JOIN snippets s ON s.id = v.snippet_id" if more else ""
        narrow = f.by_document() or f.kinds is not None or f.page_from is not None or f.page_to is not None
        return cls(conds + more, args + more_args, join, narrow)
