"""SQLiteStore: the SQLite backend, files beside one WAL-mode database.

Layout under the data directory:

    docenrich.sqlite3           WAL-mode database (documents, collections, snippets, vectors, batches, FTS5 index)
    pdfs/<sha256>.pdf           uploaded PDFs, named by content
    images/<sha256>.<ext>       snippet images, named by content (shared between snippets)
    thumbs/<doc_id>/p<N>.png    page thumbnail cache

What only SQLite does: content as files (blobs.py), the FTS5 index kept by triggers, new snippet
ids from a counter that only grows, and dense search in memory (storage/index.py).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from docenrich.filters import SearchFilter, merged
from docenrich.storage.engine import sqlite_engine
from docenrich.storage.filters import snippet_conditions
from docenrich.storage.index import VectorIndex
from docenrich.storage.sqlite import schema
from docenrich.storage.sqlite.blobs import BlobsMixin
from docenrich.storage.store import SQLStore
from docenrich.storage.tables import counters, snippets
from docenrich.storage.terms import query_terms

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

    def __init__(self, data_dir: str | Path):
        """Create the directories and bring the schema up to date."""
        self._init_blobs(data_dir)
        self.db_path = self.data_dir / DB_NAME
        self._open(sqlite_engine(self.db_path), "Could not open the database (in DATA_DIR)")

    def vector_index(self, embedder: str) -> VectorIndex:
        """Dense search for one embedder: its vectors held in this process as a numpy matrix."""
        return VectorIndex(self, embedder)

    def _create_schema(self, conn: sa.Connection) -> None:
        schema.create(conn)

    def _insert_order(self) -> sa.ColumnElement:
        return sa.literal_column("documents.rowid")

    def _new_snippet_id(self) -> dict[str, Any]:
        # Ids are never reused (SQLite's default is max(id) + 1): the counter only grows.
        return {"id": sa.select(counters.c.value + 1).where(counters.c.name == "snippet_id_seq").scalar_subquery()}

    def lexical_search(
        self, query: str, k: int, *, document_id: str | None = None, exclude_kinds: Iterable[str] = (),
        filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by BM25, best first (higher score is better), within the filter."""
        expr = fts_query(query)
        if not expr or k <= 0:
            return []
        fts = sa.table("snippets_fts", sa.column("rowid", sa.Integer))
        rank = sa.literal_column(f"bm25(snippets_fts, {_BM25_WEIGHTS})").label("rank")
        stmt = sa.select(fts.c.rowid, rank).where(sa.literal_column("snippets_fts").op("MATCH")(expr))
        conds = snippet_conditions(merged(filter, document_id, exclude_kinds))
        if conds:
            stmt = stmt.join(snippets, snippets.c.id == fts.c.rowid).where(*conds)
        try:
            rows = self._all(stmt.order_by(rank).limit(int(k)))
        except sa.exc.OperationalError as exc:
            if "fts5" in str(exc).lower() or "syntax" in str(exc).lower():
                return []
            raise
        # bm25() is lower-is-better; callers expect higher-is-better like the vector scores.
        return [(int(r["rowid"]), -float(r["rank"])) for r in rows]
