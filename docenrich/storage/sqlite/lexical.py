"""Lexical search: BM25 over the FTS5 index of snippet text and context (heading, title)."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from docenrich.filters import SearchFilter, merged
from docenrich.storage.filters import snippet_conditions
from docenrich.storage.rows import unchanged
from docenrich.storage.terms import query_terms

# Weight of the text and context columns in bm25(): the heading and title count half.
_BM25_WEIGHTS = "1.0, 0.5"
MAX_SPARSE_TERMS = 64


def fts_query(query: str) -> str:
    """An FTS5 MATCH expression for free text: its terms OR-ed, each identifier a phrase of its parts."""
    # Double quotes make every part a literal string: no FTS5 operator can be injected.
    return " OR ".join('"' + " ".join(parts).replace('"', '""') + '"' for parts in query_terms(query))


class LexicalMixin:
    """BM25 top-k over snippets_fts and learned-sparse top-k over sparse_postings."""

    def _put_sparse(self, conn: sqlite3.Connection, sid: int, embedder: str, weights: list[tuple[int, float]]) -> None:
        """Replace one snippet's sparse postings for one embedder (inside the caller's transaction)."""
        conn.execute("DELETE FROM sparse_postings WHERE snippet_id = ? AND embedder = ?", (sid, embedder))
        conn.executemany("INSERT INTO sparse_postings (embedder, token, snippet_id, weight) VALUES (?, ?, ?, ?)",
                         [(embedder, t, sid, w) for t, w in weights])

    def save_sparse(self, items: list[tuple[int, dict[int, float]]], embedder: str,
                    digests: dict[int, str] | None = None) -> None:
        """Store (snippet_id, {token id: weight}) pairs for `embedder`; ids of deleted snippets are skipped,
        and so are those whose text no longer has the digest given for it."""
        with self._write("the sparse vectors") as conn:
            for sid, weights in unchanged(conn, "?", list(items), digests):
                if conn.execute("SELECT 1 FROM snippets WHERE id = ?", (int(sid),)).fetchone():
                    self._put_sparse(conn, int(sid), embedder,
                                     [(int(t), float(w)) for t, w in weights.items() if float(w) > 0])

    def sparse_search(
        self, embedder: str, weights: dict[int, float], k: int, *, document_id: str | None = None,
        exclude_kinds: Iterable[str] = (), filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by the dot product of sparse weights, best first, within the filter."""
        query = sorted(((int(t), float(w)) for t, w in weights.items() if float(w) > 0), key=lambda x: -x[1])
        query = query[:MAX_SPARSE_TERMS]
        if not query or k <= 0:
            return []
        values = ", ".join("(?, ?)" for _ in query)
        conds, cargs = snippet_conditions(merged(filter, document_id, exclude_kinds), "?")
        args: list = [v for pair in query for v in pair] + [embedder] + cargs
        join = "JOIN snippets s ON s.id = p.snippet_id" if conds else ""
        sql = (f"WITH q(token, w) AS (VALUES {values}) "
               f"SELECT p.snippet_id, sum(p.weight * q.w) AS score FROM q "
               f"JOIN sparse_postings p ON p.token = q.token {join} WHERE {' AND '.join(['p.embedder = ?', *conds])} "
               f"GROUP BY p.snippet_id ORDER BY score DESC LIMIT ?")
        rows = self._conn().execute(sql, (*args, int(k))).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def lexical_search(
        self, query: str, k: int, *, document_id: str | None = None, exclude_kinds: Iterable[str] = (),
        filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by BM25, best first (higher score is better), within the filter."""
        expr = fts_query(query)
        if not expr or k <= 0:
            return []
        conds, cargs = snippet_conditions(merged(filter, document_id, exclude_kinds), "?")
        where, args = ["snippets_fts MATCH ?", *conds], [expr, *cargs]
        join = "JOIN snippets s ON s.id = snippets_fts.rowid" if conds else ""
        sql = (
            f"SELECT snippets_fts.rowid, bm25(snippets_fts, {_BM25_WEIGHTS}) AS rank FROM snippets_fts {join} "
            f"WHERE {' AND '.join(where)} ORDER BY rank LIMIT ?"
        )
        try:
            rows = self._conn().execute(sql, (*args, int(k))).fetchall()
        except sqlite3.OperationalError as exc:
            if "fts5" in str(exc).lower() or "syntax" in str(exc).lower():
                return []
            raise
        # bm25() is lower-is-better; callers expect higher-is-better like the vector scores.
        return [(int(r[0]), -float(r[1])) for r in rows]
