"""Reading stored snippets (for the API and pages, and as Snippets still to embed), their images,
and learned sparse vectors (BGE-M3's lexical weights) as postings."""
from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy as sa

from docenrich.filters import SearchFilter, merged
from docenrich.records import Snippet, StoredSnippet
from docenrich.storage.encoding import image_name, json_load, positive_weights
from docenrich.storage.engine import CONTENT_LOCK
from docenrich.storage.filters import snippet_conditions
from docenrich.storage.rows import row_to_snippet, unchanged
from docenrich.storage.tables import SNIPPET_COLUMNS, snippets, sparse_postings, vectors
from docenrich.storage.tables import images as image_table

log = logging.getLogger(__name__)

# Bound on the ids in one IN (...) query.
_IDS_PER_QUERY = 500
MAX_SPARSE_TERMS = 64
# Ordinals per snippets_around query: six parameters each keeps it well under SQLite's oldest
# variable limit (999), and a search's k (at most 100) always fits in one.
ORDINALS_PER_QUERY = 100


def around_query(doc_id: str, ordinals: list[int], n: int) -> sa.Select:
    """snippets_around's query: per ordinal, the n rows before and from it, index range scans each."""
    s = snippets
    parts = [sa.select(part.c.id) for o in ordinals for part in (
        sa.select(s.c.id).where(s.c.document_id == doc_id, s.c.ordinal < o).order_by(s.c.ordinal.desc())
        .limit(n).subquery(),
        sa.select(s.c.id).where(s.c.document_id == doc_id, s.c.ordinal >= o).order_by(s.c.ordinal)
        .limit(n + 1).subquery())]
    return sa.select(*SNIPPET_COLUMNS).where(s.c.id.in_(sa.union_all(*parts)))


class SnippetsMixin:
    """Queries over the snippets and sparse_postings tables."""

    def snippets(
        self, doc_id: str, *, limit: int | None = None, offset: int = 0, page: int | None = None
    ) -> list[StoredSnippet]:
        """A document's snippets in reading order (by ordinal), optionally of one page only."""
        query = sa.select(*SNIPPET_COLUMNS).where(snippets.c.document_id == doc_id)
        if page is not None:
            query = query.where(snippets.c.page == int(page))
        query = query.order_by(snippets.c.ordinal).limit(None if limit is None else int(limit)).offset(int(offset))
        return [row_to_snippet(r) for r in self._all(query)]

    def snippets_without_image(self, doc_id: str, limit: int = 500, *, after_ordinal: int = -1) -> list[StoredSnippet]:
        """A document's snippets whose region image is not rendered yet, in reading order after an ordinal."""
        return [row_to_snippet(r) for r in self._all(sa.select(*SNIPPET_COLUMNS).where(
            snippets.c.document_id == doc_id, snippets.c.image.is_(None), snippets.c.ordinal > int(after_ordinal),
        ).order_by(snippets.c.ordinal).limit(int(limit)))]

    def set_snippet_images(self, images: list[tuple[int, bytes, str]]) -> int:
        """Store rendered (snippet id, bytes, format) region images where a snippet has none yet."""
        named = [(int(sid), image_name(data, fmt, f"snippet {sid}"), bytes(data)) for sid, data, fmt in images]
        if not named:
            return 0
        done = 0
        with self._content(images={name: data for _, name, data in named}) as garbage:
            # Images of snippets deleted (or drawn by another process) meanwhile are not kept.
            garbage.check_new = True
            # CONTENT_LOCK: an image is never dropped while a snippet starts using it.
            with self._write("the snippet images", lock=CONTENT_LOCK) as conn:
                for sid, name, data in named:
                    if conn.execute(sa.update(snippets).where(snippets.c.id == sid, snippets.c.image.is_(None))
                                    .values(image=name)).rowcount:
                        self._put(conn, image_table, {name: data})
                        done += 1
        return done

    def snippets_around(self, doc_id: str, ordinals: Iterable[int], n: int) -> list[StoredSnippet]:
        """A document's snippets at the given ordinals and up to n either side of each, by ordinal."""
        found: dict[int, sa.RowMapping] = {}
        wanted = sorted({int(o) for o in ordinals})
        for start in range(0, len(wanted), ORDINALS_PER_QUERY):
            query = around_query(doc_id, wanted[start:start + ORDINALS_PER_QUERY], max(0, int(n)))
            found.update((r["id"], r) for r in self._all(query))
        return [row_to_snippet(r) for r in sorted(found.values(), key=lambda r: r["ordinal"])]

    def get_snippet(self, snippet_id: int) -> StoredSnippet | None:
        """One snippet by id, or None."""
        found = self.get_snippets([snippet_id])
        return found[0] if found else None

    def get_snippets(self, snippet_ids: Iterable[int]) -> list[StoredSnippet]:
        """Several snippets by id, in the order given; missing ids are skipped."""
        ids = [int(i) for i in snippet_ids]
        found: dict[int, StoredSnippet] = {}
        for start in range(0, len(ids), _IDS_PER_QUERY):
            query = sa.select(*SNIPPET_COLUMNS).where(snippets.c.id.in_(ids[start : start + _IDS_PER_QUERY]))
            found.update((r["id"], row_to_snippet(r)) for r in self._all(query))
        return [found[i] for i in ids if i in found]

    def snippets_needing_vectors(self, embedder: str, limit: int, *, after_id: int = 0) -> list[Snippet]:
        """Snippets without a vector from `embedder` (id > after_id); meta carries snippet_id and image."""
        s = snippets
        rows = self._all(sa.select(s.c.id, s.c.document_id, s.c.ordinal, s.c.page, s.c.bbox, s.c.text, s.c.kind,
                                   s.c.meta, s.c.image).where(
            s.c.id > int(after_id),
            ~sa.exists().where(vectors.c.snippet_id == s.c.id, vectors.c.embedder == embedder),
        ).order_by(s.c.id).limit(int(limit)))
        out = []
        for r in rows:
            bbox, meta = json_load(r["bbox"], None), json_load(r["meta"], {})
            meta["snippet_id"] = r["id"]
            if r["image"]:
                meta["image"] = r["image"]
            out.append(Snippet(text=r["text"], page=r["page"], bbox=tuple(bbox) if bbox is not None else None,
                               document_id=r["document_id"], ordinal=r["ordinal"], kind=r["kind"], meta=meta))
        return out

    # ---- learned sparse vectors

    def _put_sparse(self, conn: sa.Connection, sid: int, embedder: str, weights: list[tuple[int, float]]) -> None:
        """Replace one snippet's sparse postings for one embedder (inside the caller's transaction)."""
        p = sparse_postings
        conn.execute(sa.delete(p).where(p.c.snippet_id == sid, p.c.embedder == embedder))
        if weights:
            conn.execute(sa.insert(p), [{"embedder": embedder, "token": t, "snippet_id": sid, "weight": w}
                                        for t, w in weights])

    def save_sparse(self, items: list[tuple[int, dict[int, float]]], embedder: str,
                    digests: dict[int, str] | None = None) -> None:
        """Store (snippet_id, {token: weight}) pairs for `embedder`, skipping snippets deleted or changed."""
        with self._write("the sparse vectors") as conn:
            for sid, weights in unchanged(conn, list(items), digests):
                # FOR SHARE (PostgreSQL): the snippet cannot be deleted before this commits.
                if conn.execute(sa.select(snippets.c.id).where(snippets.c.id == int(sid))
                                .with_for_update(read=True)).first():
                    self._put_sparse(conn, int(sid), embedder, positive_weights(weights))

    def lexical_search(
        self, query: str, k: int, *, document_id: str | None = None, exclude_kinds: Iterable[str] = (),
        filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by a lexical ranking, best first, within the filter (in the query).

        It covers each snippet's text and context (heading, document title); identifiers such as
        R_MAKEVARS_USER or foo.bar() match as a unit, case- and diacritics-insensitively."""
        conds = snippet_conditions(merged(filter, document_id, exclude_kinds), self._snippet_table)
        stmt = self._lexical_query(query, conds) if k > 0 else None
        if stmt is None:
            return []
        try:
            rows = self._all(stmt.limit(int(k)))
        except sa.exc.OperationalError as exc:
            # An expression SQLite's FTS5 cannot parse finds nothing rather than failing the search.
            if "fts5" in str(exc).lower() or "syntax" in str(exc).lower():
                return []
            raise
        return [(int(r["id"]), float(r["score"])) for r in rows]

    def sparse_search(
        self, embedder: str, weights: dict[int, float], k: int, *, document_id: str | None = None,
        exclude_kinds: Iterable[str] = (), filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by the dot product of sparse weights, best first, within the filter."""
        query = sorted(positive_weights(weights), key=lambda x: -x[1])[:MAX_SPARSE_TERMS]
        if not query or k <= 0:
            return []
        p = sparse_postings
        weight = sa.case(dict(query), value=p.c.token)
        score = sa.func.sum(p.c.weight * weight).label("score")
        stmt = sa.select(p.c.snippet_id, score).where(p.c.embedder == embedder, p.c.token.in_([t for t, _ in query]))
        conds = snippet_conditions(merged(filter, document_id, exclude_kinds))
        if conds:
            stmt = stmt.join(snippets, snippets.c.id == p.c.snippet_id).where(*conds)
        rows = self._all(stmt.group_by(p.c.snippet_id).order_by(score.desc(), p.c.snippet_id).limit(int(k)))
        return [(int(r["snippet_id"]), float(r["score"])) for r in rows]
