"""Vectors: one table for every embedder, their registered dimensions, change counters and removal log."""
from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import sqlalchemy as sa

from docenrich.storage.base import DimensionMismatch
from docenrich.storage.encoding import as_vector
from docenrich.storage.engine import CONTENT_LOCK
from docenrich.storage.rows import unchanged
from docenrich.storage.tables import (
    counters,
    documents,
    embedders,
    snippets,
    vector_removals,
    vectors,
)

log = logging.getLogger(__name__)

_LOAD_CHUNK = 4096


class VectorsMixin:
    """The vectors, embedders, counters and vector_removals tables."""

    def embedder_counts(self) -> dict[str, int]:
        """Number of stored vectors per embedder name."""
        rows = self._all(sa.select(vectors.c.embedder, sa.func.count().label("n"))
                         .group_by(vectors.c.embedder).order_by(vectors.c.embedder))
        return {r["embedder"]: int(r["n"]) for r in rows}

    def embedder_dims(self) -> dict[str, int]:
        """Vector dimension registered for each embedder name."""
        return {r["name"]: r["dim"] for r in self._all(sa.select(embedders.c.name, embedders.c.dim)
                                                        .order_by(embedders.c.name))}

    def save_vectors(self, items: list[tuple[int, np.ndarray]], embedder: str,
                     digests: dict[int, str] | None = None) -> None:
        """Store (snippet_id, vector) pairs for `embedder`, skipping snippets deleted or changed (digests)."""
        if not embedder:
            raise ValueError("embedder name is required")
        prepared = [(int(sid), as_vector(vec, f"snippet {sid}")) for sid, vec in items]
        if not prepared:
            return
        with self._write("the vectors", lock=CONTENT_LOCK) as conn:
            prepared = unchanged(conn, prepared, digests)
            if not prepared:
                return
            self._register_dims(conn, [(embedder, int(v.shape[0])) for _, v in prepared])
            counts = [self._put_vector(conn, sid, embedder, vec) for sid, vec in prepared]
            self._bump_vectors(conn, sum(a for a, _ in counts), sum(r for _, r in counts))
            # A document names the embedder of its vectors once every snippet has one from it.
            s, v = snippets, vectors
            lacking = sa.exists().where(s.c.document_id == documents.c.id, ~sa.exists().where(
                v.c.snippet_id == s.c.id, v.c.embedder == embedder))
            conn.execute(sa.update(documents).where(
                documents.c.id.in_(sa.select(s.c.document_id).where(s.c.id.in_([sid for sid, _ in prepared]))),
                ~lacking).values(embedder=embedder))
        self._vectors_saved({embedder})

    def unindexed_count(self, embedder: str) -> int:
        """Snippets without a vector from `embedder`, from counts the triggers keep (no scan)."""
        total = sa.select(counters.c.value).where(counters.c.name == "snippets_total").scalar_subquery()
        indexed = sa.select(embedders.c.vector_count).where(embedders.c.name == embedder).scalar_subquery()
        return max(0, int(self._scalar(sa.select(total - sa.func.coalesce(indexed, 0))) or 0))

    def delete_vectors(self, embedder: str) -> int:
        """Drop every vector of one embedder (and its registered dimension); returns the count."""
        with self._write("the vectors", lock=CONTENT_LOCK) as conn:
            n = conn.execute(sa.delete(vectors).where(vectors.c.embedder == embedder)).rowcount
            conn.execute(sa.delete(embedders).where(embedders.c.name == embedder))
            self._bump_vectors(conn, removed=n)
        return n

    def vectors_state(self) -> tuple[int, int]:
        """(version, epoch): version moves on any vector change, epoch only on removals/replacements."""
        rows = {r["name"]: int(r["value"]) for r in self._all(sa.select(counters.c.name, counters.c.value))}
        return rows["vectors_version"], rows["vectors_epoch"]

    def _vector_changes(self, embedder: str, after_rowid: int, after_seq: int | None) -> dict:
        """From one snapshot: vectors added after after_rowid, snippet ids removed after after_seq
        (None when the log does not reach back, or after_seq is None), last seq and counters."""
        with self._read() as conn:
            removed, last_seq = _removals(conn, embedder, after_seq)
            return {**_read_rows(conn, embedder, after_rowid), "removed": removed, "last_seq": last_seq,
                    "state": _counters(conn)}

    def load_vectors(self, embedder: str, after_rowid: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(snippet_ids int64, document ids, float32 matrix [n, dim], max rowid) for rows after after_rowid."""
        rows = self._vector_changes(embedder, after_rowid, None)
        return rows["ids"], rows["docs"], rows["matrix"], rows["max_rowid"]

    def _register_dims(self, conn: sa.Connection, pairs: Iterable[tuple[str, int]]) -> None:
        """Register the (embedder, dimension) pairs of one call, or DimensionMismatch."""
        dims: dict[str, set[int]] = {}
        for name, dim in pairs:
            dims.setdefault(name, set()).add(int(dim))
        for name, found in dims.items():
            if len(found) > 1:
                raise DimensionMismatch(
                    f"embedder {name!r} produced vectors of different sizes {sorted(found)} in one call")
            dim = next(iter(found))
            if conn.execute(self._insert(embedders).values(name=name, dim=dim, vector_count=0)
                            .on_conflict_do_nothing()).rowcount:
                self._new_dimension(conn, dim)
            known = conn.execute(sa.select(embedders.c.dim).where(embedders.c.name == name)).scalar()
            if known != dim:
                raise DimensionMismatch(
                    f"embedder {name!r} produced {dim}-dimensional vectors, but the database already holds "
                    f"{known}-dimensional vectors under that name; use a distinct embedder name for a "
                    f"different model (or delete_vectors({name!r}) first).")

    def _put_vector(self, conn: sa.Connection, snippet_id: int, embedder: str,
                    vec: np.ndarray) -> tuple[int, int]:
        """Insert or replace one vector; returns (added, removed)."""
        old = conn.execute(sa.select(vectors.c.id, vectors.c.embedding).where(
            vectors.c.snippet_id == snippet_id, vectors.c.embedder == embedder)).first()
        if old is not None and np.array_equal(old.embedding, vec):
            return 0, 0
        if old is not None:
            # Delete + insert (a new id) rather than UPDATE: an index appending "id > last" sees it.
            conn.execute(sa.delete(vectors).where(vectors.c.id == old.id))
        added = conn.execute(sa.insert(vectors).from_select(
            ["snippet_id", "document_id", "embedder", "dim", "embedding"],
            sa.select(snippets.c.id, snippets.c.document_id, sa.literal(embedder), sa.literal(len(vec)),
                      sa.literal(vec, vectors.c.embedding.type)).where(snippets.c.id == snippet_id))).rowcount
        return added, int(old is not None)

    @staticmethod
    def _bump_vectors(conn: sa.Connection, added: int = 0, removed: int = 0) -> None:
        """Move the change counters on: the version for any change, the epoch for removals too."""
        if not (added or removed):
            return
        names = ["vectors_version", "vectors_epoch"] if removed else ["vectors_version"]
        conn.execute(sa.update(counters).where(counters.c.name.in_(names)).values(value=counters.c.value + 1))


def _counters(conn: sa.Connection) -> tuple[int, int]:
    """(vectors_version, vectors_epoch) as seen by conn."""
    rows = dict(conn.execute(sa.select(counters.c.name, counters.c.value)).all())
    return int(rows["vectors_version"]), int(rows["vectors_epoch"])


def _removals(conn: sa.Connection, embedder: str, after_seq: int | None) -> tuple[list[int] | None, int]:
    """(snippet ids removed after after_seq or None if the log does not reach back, last seq)."""
    r = vector_removals
    first, last = conn.execute(sa.select(sa.func.min(r.c.seq), sa.func.coalesce(sa.func.max(r.c.seq), 0))).one()
    removed = None
    if after_seq is not None and (first is None or first <= after_seq + 1 or not after_seq):
        removed = list(conn.scalars(sa.select(r.c.snippet_id).where(r.c.seq > after_seq, r.c.embedder == embedder)
                                    .order_by(r.c.seq)))
    return removed, int(last)


def _read_rows(conn: sa.Connection, embedder: str, after_rowid: int) -> dict:
    """Snippet ids, document ids, matrix, max rowid, pages and kinds of one embedder's vectors after after_rowid."""
    v = vectors
    dim = conn.execute(sa.select(embedders.c.dim).where(embedders.c.name == embedder)).scalar() or 0
    where = (v.c.embedder == embedder, v.c.id > after_rowid)
    n = conn.execute(sa.select(sa.func.count()).select_from(v).where(*where)).scalar()
    ids, pages = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int32)
    matrix = np.empty((n, dim), dtype=np.float32)
    docs: list[str] = []
    kinds: list[str] = []
    max_rowid, i = after_rowid, 0
    # Each row's page and kind come along, so filters apply inside the in-memory index too.
    result = conn.execute(sa.select(v.c.id, v.c.snippet_id, v.c.document_id, v.c.embedding, snippets.c.page,
                                    snippets.c.kind).join(snippets, snippets.c.id == v.c.snippet_id)
                          .where(*where).order_by(v.c.id))
    # Filled chunk by chunk so peak memory is the matrix plus one chunk of rows.
    for rows in result.partitions(_LOAD_CHUNK):
        for rowid, sid, doc, vec, page, kind in rows:
            if i == n:
                break
            ids[i], matrix[i], pages[i] = sid, vec, page
            docs.append(doc)
            kinds.append(kind)
            max_rowid, i = rowid, i + 1
    return {"ids": ids[:i], "docs": np.array(docs, dtype="U16"), "matrix": matrix[:i], "max_rowid": max_rowid,
            "pages": pages[:i], "kinds": kinds}
