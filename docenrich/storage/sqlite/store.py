"""SQLiteStore: the SQLite backend, files beside one WAL-mode database.

Layout under the data directory:

    docenrich.sqlite3           WAL-mode database (documents, collections, snippets, vectors, batches, FTS5 index)
    pdfs/<sha256>.pdf           uploaded PDFs, named by content
    images/<sha256>.<ext>       snippet images, named by content (shared between snippets)
    thumbs/<doc_id>/p<N>.png    page thumbnail cache
    vectors/<embedder>/         memory-mapped vector files every process shares (vectorindex/files.py)
    lexical/words/              the memory-mapped BM25 word index every process shares (textindex/files.py)
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from docenrich.filters import SearchFilter, merged
from docenrich.storage.encoding import positive_weights
from docenrich.storage.engine import sqlite_engine
from docenrich.storage.snippets import MAX_SPARSE_TERMS
from docenrich.storage.sqlite import schema
from docenrich.storage.sqlite.blobs import BlobsMixin
from docenrich.storage.store import SQLStore
from docenrich.storage.tables import counters, snippets
from docenrich.storage.terms import query_terms
from docenrich.vectorindex import MODES, MappedIndex, VectorIndex, sync
from docenrich.vectorindex.files import VectorFiles, vector_dir

if TYPE_CHECKING:
    from docenrich.textindex import SparseIndex

log = logging.getLogger(__name__)

DB_NAME = "docenrich.sqlite3"
# Weight of the text and context columns in bm25(): the heading and title count half.
_BM25_WEIGHTS = "1.0, 0.5"


def _sparse_answer(ids, docs, pages, kinds, tokens, weights, row_of) -> dict:
    return {"ids": np.asarray(ids, dtype=np.int64), "docs": np.asarray(docs, dtype="U16"),
            "pages": np.asarray(pages, dtype=np.int32), "kinds": list(kinds), "tokens": tokens, "weights": weights,
            "row_of": row_of}


def fts_query(query: str) -> str:
    """An FTS5 MATCH expression for free text: its terms OR-ed, each identifier a phrase of its parts."""
    # Double quotes make every part a literal string: no FTS5 operator can be injected.
    return " OR ".join('"' + " ".join(parts).replace('"', '""') + '"' for parts in query_terms(query))


class SQLiteStore(BlobsMixin, SQLStore):
    """SQLite + files under one data directory; one engine (and pool) per database and process."""

    def __init__(self, data_dir: str | Path, vector_mode: str | None = None, hnsw_min_rows: int | None = None,
                 map_budget_mb: int | None = None, lexical_min_rows: int | None = None):
        """Create the directories and bring the schema up to date; vector_mode defaults to VECTOR_INDEX,
        lexical_min_rows (below it FTS5 answers lexical search; negative: always) to LEXICAL_INDEX_MIN."""
        self._init_blobs(data_dir)
        self.db_path = self.data_dir / DB_NAME
        if None in (vector_mode, hnsw_min_rows, map_budget_mb, lexical_min_rows):
            from docenrich.config import get_settings

            settings = get_settings()
            vector_mode = settings.vector_index if vector_mode is None else vector_mode
            hnsw_min_rows = settings.vector_index_hnsw_min if hnsw_min_rows is None else hnsw_min_rows
            map_budget_mb = settings.vector_map_budget_mb if map_budget_mb is None else map_budget_mb
            lexical_min_rows = settings.lexical_index_min if lexical_min_rows is None else lexical_min_rows
        self.lexical_min_rows = lexical_min_rows
        from docenrich.textindex import (
            WordIndex,  # here: textindex itself imports the storage package
        )

        self.words = (WordIndex(self, self.data_dir, lexical_min_rows, map_budget_mb * 2**20)
                      if lexical_min_rows >= 0 else None)
        self._sparse: dict[str, SparseIndex] = {}
        if vector_mode not in MODES:
            raise ValueError(f"VECTOR_INDEX must be one of {', '.join(MODES)} (got {vector_mode!r})")
        self.vector_mode, self.hnsw_min_rows, self.map_budget_mb = vector_mode, hnsw_min_rows, map_budget_mb
        self._open(sqlite_engine(self.db_path), "Could not open the database (in DATA_DIR)")

    def vector_index(self, embedder: str) -> MappedIndex | VectorIndex:
        """Dense search for one embedder: over the shared mapped vector files, or (memory) a private numpy matrix."""
        if self.vector_mode == "memory":
            return VectorIndex(self, embedder)
        return MappedIndex(self, embedder, self.data_dir, self.vector_mode, self.hnsw_min_rows,
                           page_budget=self.map_budget_mb * 2**20)

    def _vectors_saved(self, embedders: set[str]) -> None:
        """The writers' side: append what was just committed (the database stays the truth if this fails)."""
        if self.words is not None:
            # The postings indexes too, once the store is large enough for them, so searches find them current.
            self.words.catch_up()
            for name in embedders:
                self._sparse_index(name).catch_up()
        if self.vector_mode == "memory":
            return
        for name in embedders:
            try:
                sync(self, VectorFiles(vector_dir(self.data_dir, name), name))
            except OSError as exc:
                # Readers catch up (or rebuild) from the database on their next refresh.
                log.warning("vector files of %r not updated: %s", name, exc)

    def _create_schema(self, conn: sa.Connection) -> None:
        schema.create(conn)

    def _insert_order(self) -> sa.ColumnElement:
        return sa.literal_column("documents.rowid")

    # Snippet ids come from a counter row, one insert at a time (and rows are local: no round trips to save).
    _numbers_snippets = False

    def _new_snippet_id(self) -> dict[str, Any]:
        # Ids are never reused (SQLite's default is max(id) + 1): the counter only grows.
        return {"id": sa.select(counters.c.value + 1).where(counters.c.name == "snippet_id_seq").scalar_subquery()}

    def lexical_search(
        self, query: str, k: int, *, document_id: str | None = None, exclude_kinds: Iterable[str] = (),
        filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k by BM25: from the shared word index at scale, from FTS5 below LEXICAL_INDEX_MIN snippets."""
        if self.words is not None and k > 0 and self.words.refresh():
            return self.words.search(query, k, merged(filter, document_id, exclude_kinds))
        return super().lexical_search(query, k, document_id=document_id, exclude_kinds=exclude_kinds, filter=filter)

    def sparse_search(
        self, embedder: str, weights: dict[int, float], k: int, *, document_id: str | None = None,
        exclude_kinds: Iterable[str] = (), filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k by sparse dot product: from the embedder's shared postings index at scale, else from SQL."""
        if self.lexical_min_rows >= 0 and k > 0:
            index = self._sparse_index(embedder)
            if index.refresh():
                query = sorted(positive_weights(weights), key=lambda x: -x[1])[:MAX_SPARSE_TERMS]
                return index.search(query, k, merged(filter, document_id, exclude_kinds))
        return super().sparse_search(embedder, weights, k, document_id=document_id, exclude_kinds=exclude_kinds,
                                     filter=filter)

    def _sparse_index(self, embedder: str) -> SparseIndex:
        index = self._sparse.get(embedder)
        if index is None:
            from docenrich.textindex import SparseIndex

            index = SparseIndex(self, embedder, self.data_dir, self.lexical_min_rows, self.map_budget_mb * 2**20)
            index.background = self.words.background if self.words is not None else True
            index = self._sparse.setdefault(embedder, index)
        return index

    def _put_sparse(self, conn: sa.Connection, sid: int, embedder: str, weights: list[tuple[int, float]]) -> None:
        super()._put_sparse(conn, sid, embedder, weights)
        conn.exec_driver_sql("INSERT INTO sparse_changes(embedder, snippet_id) VALUES (?, ?)", (embedder, sid))

    def sparse_index_state(self, embedder: str) -> tuple[int, int, int, int]:
        """(last sparse change, snippets ever removed, last in-place change, snippets now) for a sparse index."""
        seq, total, changed = self.text_index_state()
        last = self._scalar(sa.text("SELECT coalesce(max(seq), 0) FROM sparse_changes"))
        # Snippet ids come from a counter one at a time: the ids given minus the snippets left are the removed.
        return int(last or 0), seq - total, changed, total

    def sparse_changed_ids(self, embedder: str, after_seq: int, upto_seq: int) -> np.ndarray:
        """Ids of the snippets whose sparse postings from `embedder` were written with after_seq < seq <= upto_seq."""
        rows = self._all(sa.text("SELECT DISTINCT snippet_id FROM sparse_changes WHERE seq > :a AND seq <= :b "
                                 "AND embedder = :e").bindparams(a=int(after_seq), b=int(upto_seq), e=embedder))
        return np.asarray(sorted(r["snippet_id"] for r in rows), dtype=np.int64)

    def sparse_rows(self, embedder: str, ids: np.ndarray) -> dict:
        """The snippets of `ids` (ascending) that have postings from `embedder`, in id order, with their
        postings flat: token, weight and the row (0-based within this answer) of each."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return _sparse_answer([], [], [], [], np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int64))
        with self._read() as conn:
            # A range read (the snippet_id index) rather than thousands of bound ids; others are dropped below.
            result = conn.exec_driver_sql(
                "SELECT s.id, s.document_id, s.page, s.kind, p.token, p.weight FROM sparse_postings p "
                "JOIN snippets s ON s.id = p.snippet_id WHERE p.embedder = ? AND p.snippet_id BETWEEN ? AND ? "
                "ORDER BY p.snippet_id", (embedder, int(ids[0]), int(ids[-1]))).all()
        got = np.fromiter((r[0] for r in result), dtype=np.int64, count=len(result))
        keep = np.isin(got, ids)
        rows = [r for r, k in zip(result, keep.tolist(), strict=True) if k]
        got = got[keep]
        first = np.flatnonzero(np.r_[True, got[1:] != got[:-1]]) if len(got) else np.empty(0, np.int64)
        heads = [rows[i] for i in first.tolist()]
        return _sparse_answer([r[0] for r in heads], [r[1] for r in heads], [r[2] for r in heads],
                              [r[3] for r in heads], np.fromiter((r[4] for r in rows), np.int64, len(rows)),
                              np.fromiter((r[5] for r in rows), np.float32, len(rows)),
                              np.cumsum(np.r_[False, got[1:] != got[:-1]]) if len(got) else np.empty(0, np.int64))

    def text_index_state(self) -> tuple[int, int, int]:
        """(highest snippet id ever given, snippets now, last in-place change): the word index is
        fresh while they stand."""
        with self._read() as conn:
            rows = dict(conn.execute(sa.select(counters.c.name, counters.c.value).where(
                counters.c.name.in_(["snippet_id_seq", "snippets_total"]))).all())
            changed = conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM text_changes").scalar()
        return int(rows.get("snippet_id_seq", 0)), int(rows.get("snippets_total", 0)), int(changed)

    def text_changed_ids(self, after_seq: int, upto_seq: int) -> np.ndarray:
        """Ids of the snippets changed in place with after_seq < seq <= upto_seq."""
        rows = self._all(sa.text("SELECT DISTINCT snippet_id FROM text_changes WHERE seq > :a AND seq <= :b")
                         .bindparams(a=int(after_seq), b=int(upto_seq)))
        return np.asarray([r["snippet_id"] for r in rows], dtype=np.int64)

    def text_rows(self, after_id: int, upto_id: int, limit: int, only: np.ndarray | None = None) -> dict:
        """Up to `limit` snippets with after_id < id <= upto_id (and among `only`), in id order: the
        word index's new rows, with the text and context FTS5 indexed."""
        s = snippets
        fts = sa.table("snippets_fts", sa.column("rowid", sa.Integer), sa.column("text"), sa.column("context"))
        stmt = sa.select(s.c.id, s.c.document_id, s.c.page, s.c.kind, fts.c.text, fts.c.context).join(
            fts, fts.c.rowid == s.c.id).where(s.c.id > int(after_id), s.c.id <= int(upto_id))
        if only is not None:
            stmt = stmt.where(s.c.id.in_([int(i) for i in only]))
        rows = self._all(stmt.order_by(s.c.id).limit(int(limit)))
        return {"ids": np.asarray([r["id"] for r in rows], dtype=np.int64),
                "docs": np.asarray([r["document_id"] for r in rows], dtype="U16"),
                "pages": np.asarray([r["page"] for r in rows], dtype=np.int32),
                "kinds": [r["kind"] for r in rows],
                "texts": [(r["text"] or "", r["context"] or "") for r in rows]}

    def text_present_ids(self, max_id: int, indexed_alive: int) -> np.ndarray | None:
        """The ids up to max_id still present, when fewer are than the index holds alive (else None)."""
        with self._read() as conn:
            present = conn.execute(sa.select(sa.func.count()).select_from(snippets)
                                   .where(snippets.c.id <= int(max_id))).scalar()
            if int(present) == indexed_alive:
                return None
            ids = conn.execute(sa.select(snippets.c.id).where(snippets.c.id <= int(max_id)).order_by(snippets.c.id))
            return np.fromiter((r[0] for r in ids), dtype=np.int64)

    def _lexical_query(self, query: str, conds: list[sa.ColumnElement]) -> sa.Select | None:
        expr = fts_query(query)
        if not expr:
            return None
        fts = sa.table("snippets_fts", sa.column("rowid", sa.Integer))
        rank = sa.literal_column(f"bm25(snippets_fts, {_BM25_WEIGHTS})", sa.Float)
        # bm25() is lower-is-better; callers expect higher-is-better like the vector scores.
        stmt = sa.select(fts.c.rowid.label("id"), (-rank).label("score")).where(
            sa.literal_column("snippets_fts").op("MATCH")(expr))
        if conds:
            stmt = stmt.join(snippets, snippets.c.id == fts.c.rowid).where(*conds)
        return stmt.order_by(rank)
