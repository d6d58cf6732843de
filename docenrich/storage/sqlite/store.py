"""SQLiteStore: the SQLite backend, files beside one WAL-mode database.

Layout under the data directory:

    docenrich.sqlite3           WAL-mode database (documents, collections, snippets, vectors, batches, FTS5 index)
    pdfs/<sha256>.pdf           uploaded PDFs, named by content
    images/<sha256>.<ext>       snippet images, named by content (shared between snippets)
    thumbs/<doc_id>/p<N>.png    page thumbnail cache
    vectors/<embedder>/         memory-mapped vector files every process shares (vectorindex/files.py)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from docenrich.storage.engine import sqlite_engine
from docenrich.storage.sqlite import schema
from docenrich.storage.sqlite.blobs import BlobsMixin
from docenrich.storage.store import SQLStore
from docenrich.storage.tables import counters, snippets
from docenrich.storage.terms import query_terms
from docenrich.vectorindex import MODES, MappedIndex, VectorIndex, sync
from docenrich.vectorindex.files import VectorFiles, vector_dir

log = logging.getLogger(__name__)

DB_NAME = "docenrich.sqlite3"
# Weight of the text and context columns in bm25(): the heading and title count half.
_BM25_WEIGHTS = "1.0, 0.5"


def fts_query(query: str) -> str:
    """An FTS5 MATCH expression for free text: its terms OR-ed, each identifier a phrase of its parts."""
    # Double quotes make every part a literal string: no FTS5 operator can be injected.
    return " OR ".join('"' + " ".join(parts).replace('"', '""') + '"' for parts in query_terms(query))


class SQLiteStore(BlobsMixin, SQLStore):
    """SQLite + files under one data directory; one engine (and pool) per database and process."""

    def __init__(self, data_dir: str | Path, vector_mode: str | None = None, hnsw_min_rows: int | None = None,
                 map_budget_mb: int | None = None):
        """Create the directories and bring the schema up to date; vector_mode defaults to VECTOR_INDEX."""
        self._init_blobs(data_dir)
        self.db_path = self.data_dir / DB_NAME
        if vector_mode is None or hnsw_min_rows is None or map_budget_mb is None:
            from docenrich.config import get_settings

            settings = get_settings()
            vector_mode = settings.vector_index if vector_mode is None else vector_mode
            hnsw_min_rows = settings.vector_index_hnsw_min if hnsw_min_rows is None else hnsw_min_rows
            map_budget_mb = settings.vector_map_budget_mb if map_budget_mb is None else map_budget_mb
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
