"""Lexical search: a tsvector per snippet (text + heading + title) ranked by ts_rank_cd, and sparse postings.

The words are cut and folded in Python (storage/terms.py), not by a text search configuration:
identifiers split at "_", ".", "-" exactly as on SQLite, diacritics fold without the unaccent
extension, and the result does not depend on the server's locale. The tsvector is written as a
literal (word:position+weight), so its positions let an identifier query match as a phrase.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from docenrich.filters import SearchFilter, merged
from docenrich.storage.filters import snippet_conditions
from docenrich.storage.rows import unchanged
from docenrich.storage.terms import fold, query_terms, words

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

# ts_rank_cd weights for {D, C, B, A}: the text is A, its context (heading, title) B, counting half.
_RANK_WEIGHTS = "{0.1, 0.2, 0.5, 1.0}"
# Normalisation 32: rank / (rank + 1), so scores stay in (0, 1) and higher is better.
_RANK_NORMALISATION = 32
_MAX_WORD = 256
_MAX_POSITIONS = 256  # what a tsvector keeps per lexeme
MAX_SPARSE_TERMS = 64


def _quote(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def lex_vector(text: str, heading: str | None, title: str | None) -> str:
    """A tsvector literal of a snippet: its text's words weighted A, its context's weighted B."""
    positions: dict[str, list[str]] = {}
    pos = 0
    for weight, part in (("A", text), ("B", f"{heading or ''} {title or ''}")):
        pos += 1  # a gap, so no phrase runs from the text into its context
        for word in words(part):
            pos += 1
            found = positions.setdefault(word[:_MAX_WORD], [])
            if len(found) < _MAX_POSITIONS:
                found.append(f"{min(pos, 16383)}{weight}")
    return " ".join(f"{_quote(w)}:{','.join(p)}" for w, p in positions.items())


def ts_query(query: str) -> str:
    """A tsquery literal: the query's terms OR-ed, an identifier a phrase (<->) of its folded parts."""
    out = []
    for parts in query_terms(query):
        folded = [fold(p) for part in parts for p in words(part)]
        if folded:
            out.append("(" + " <-> ".join(_quote(p[:_MAX_WORD]) for p in folded) + ")")
    return " | ".join(out)


class LexicalMixin:
    """ts_rank_cd top-k over snippets.lex and learned-sparse top-k over sparse_postings."""

    def lexical_search(
        self, query: str, k: int, *, document_id: str | None = None, exclude_kinds: Iterable[str] = (),
        filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by ts_rank_cd, best first (higher score is better), within the filter."""
        expr = ts_query(query)
        if not expr or k <= 0:
            return []
        conds, cargs = snippet_conditions(merged(filter, document_id, exclude_kinds), "%s")
        where, args = ["s.lex @@ q.q", *conds], [_RANK_WEIGHTS, _RANK_NORMALISATION, expr, *cargs]
        rows = self._q(
            f"""SELECT s.id, ts_rank_cd(%s::float4[], s.lex, q.q, %s) AS score
                FROM snippets s, (SELECT %s::tsquery AS q) q WHERE {' AND '.join(where)}
                ORDER BY score DESC, s.id LIMIT %s""",
            (*args, int(k)),
        ).fetchall()
        return [(int(r["id"]), float(r["score"])) for r in rows]

    def _put_sparse(self, conn: psycopg.Connection, sid: int, embedder: str, weights: list[tuple[int, float]]) -> None:
        """Replace one snippet's sparse postings for one embedder (inside the caller's transaction)."""
        conn.execute("DELETE FROM sparse_postings WHERE snippet_id = %s AND embedder = %s", (sid, embedder))
        if weights:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO sparse_postings (embedder, token, snippet_id, weight) VALUES (%s, %s, %s, %s)",
                    [(embedder, t, sid, w) for t, w in weights],
                )

    def save_sparse(self, items: list[tuple[int, dict[int, float]]], embedder: str,
                    digests: dict[int, str] | None = None) -> None:
        """Store (snippet_id, {token id: weight}) pairs for `embedder`; ids of deleted snippets are skipped,
        and so are those whose text no longer has the digest given for it."""
        with self._write("the sparse vectors") as conn:
            for sid, weights in unchanged(conn, "%s", list(items), digests):
                if conn.execute("SELECT 1 FROM snippets WHERE id = %s FOR SHARE", (int(sid),)).fetchone():
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
        args: list = [[t for t, _ in query], [w for _, w in query], embedder]
        conds, cargs = snippet_conditions(merged(filter, document_id, exclude_kinds), "%s")
        where = ["p.embedder = %s", *conds]
        args += cargs
        join = "JOIN snippets s ON s.id = p.snippet_id" if conds else ""
        rows = self._q(
            f"""WITH q(token, w) AS (SELECT * FROM unnest(%s::int[], %s::float8[]))
                SELECT p.snippet_id, sum(p.weight * q.w) AS score FROM q
                JOIN sparse_postings p ON p.token = q.token {join} WHERE {' AND '.join(where)}
                GROUP BY p.snippet_id ORDER BY score DESC, p.snippet_id LIMIT %s""",
            (*args, int(k)),
        ).fetchall()
        return [(int(r["snippet_id"]), float(r["score"])) for r in rows]
