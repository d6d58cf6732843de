"""Vectors in pgvector: one table for every embedder, a partial HNSW index per dimension, counters."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from docenrich.storage.base import DimensionMismatch
from docenrich.storage.encoding import as_vector
from docenrich.storage.postgres.schema import CONTENT_LOCK, HNSW_MAX_DIM
from docenrich.storage.rows import unchanged

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

_LOAD_CHUNK = 4096


def hnsw_index_sql(dim: int, name: str | None = None) -> str:
    """DDL of the HNSW index over the vectors of one dimension (cosine distance).

    The column is an untyped `vector`, so the index is over the expression cast to vector(dim)
    and partial on dim: embedders of different sizes share a table, each size its own index.
    """
    dim = int(dim)
    return (f"CREATE INDEX IF NOT EXISTS {name or f'vectors_hnsw_{dim}'} ON vectors USING hnsw "
            f"((embedding::vector({dim})) vector_cosine_ops) WHERE dim = {dim}")


def as_array(value: object) -> np.ndarray:
    """A vector column value as float32 numpy (the binary loader gives a Vector, text a numpy array)."""
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy else value, dtype=np.float32)


class VectorsMixin:
    """The vectors, embedders and counters tables."""

    def embedder_counts(self) -> dict[str, int]:
        """Number of stored vectors per embedder name."""
        rows = self._q("SELECT embedder, count(*) AS n FROM vectors GROUP BY embedder ORDER BY embedder")
        return {r["embedder"]: int(r["n"]) for r in rows}

    def embedder_dims(self) -> dict[str, int]:
        """Vector dimension registered for each embedder name."""
        return {r["name"]: r["dim"] for r in self._q("SELECT name, dim FROM embedders ORDER BY name")}

    def save_vectors(self, items: list[tuple[int, np.ndarray]], embedder: str,
                     digests: dict[int, str] | None = None) -> None:
        """Store (snippet_id, vector) pairs for `embedder`; ids of deleted snippets are skipped, and so are
        those whose text no longer has the digest given for it (the vector was made from other text)."""
        if not embedder:
            raise ValueError("embedder name is required")
        prepared = [(int(sid), as_vector(vec, f"snippet {sid}")) for sid, vec in items]
        if not prepared:
            return
        with self._write("the vectors", lock=CONTENT_LOCK) as conn:
            prepared = unchanged(conn, "%s", prepared, digests)
            if not prepared:
                return
            self._register_dims(conn, {embedder: {v.shape[0] for _, v in prepared}})
            added = removed = 0
            for sid, vec in prepared:
                a, r = self._put_vector(conn, sid, embedder, vec.tobytes())
                added, removed = added + a, removed + r
            if added or removed:
                self._bump_vectors(conn, removed=bool(removed))
            # A document names the embedder of its vectors once every snippet has one from it.
            conn.execute(
                """UPDATE documents SET embedder = %s WHERE id IN (
                       SELECT DISTINCT s.document_id FROM snippets s WHERE s.id = ANY(%s))
                   AND NOT EXISTS (SELECT 1 FROM snippets s WHERE s.document_id = documents.id AND NOT EXISTS
                       (SELECT 1 FROM vectors v WHERE v.snippet_id = s.id AND v.embedder = %s))""",
                (embedder, [sid for sid, _ in prepared], embedder),
            )

    def unindexed_count(self, embedder: str) -> int:
        """Snippets without a vector from `embedder`, from counts the triggers keep (no scan)."""
        row = self._q(
            """SELECT (SELECT value FROM counters WHERE name = 'snippets_total')
                    - coalesce((SELECT vector_count FROM embedders WHERE name = %s), 0) AS n""",
            (embedder,),
        ).fetchone()
        return max(0, int(row["n"] or 0))

    def vector_removals(self, embedder: str, after_seq: int) -> tuple[list[int], int] | None:
        """(snippet ids whose `embedder` vector was removed after after_seq, last seq); None if
        the log no longer reaches back that far."""
        with self._read() as conn:
            changes = _removals(conn, embedder, int(after_seq))
        if changes[0] is None:
            return None
        return changes[0], max(int(after_seq), changes[1])

    def delete_vectors(self, embedder: str) -> int:
        """Drop every vector of one embedder (and its registered dimension); returns the count."""
        with self._write("the vectors", lock=CONTENT_LOCK) as conn:
            n = conn.execute("DELETE FROM vectors WHERE embedder = %s", (embedder,)).rowcount
            conn.execute("DELETE FROM embedders WHERE name = %s", (embedder,))
            if n:
                self._bump_vectors(conn, removed=True)
        return n

    def vectors_version(self) -> int:
        """Counter bumped by every change to stored vectors."""
        return self.vectors_state()[0]

    def vectors_state(self) -> tuple[int, int]:
        """(version, epoch): version moves on any vector change, epoch only on removals/replacements."""
        return _counters(self._conn())

    def _load_vectors(self, embedder: str, after_rowid: int = 0) -> tuple:
        """load_vectors plus the (version, epoch) of the same snapshot."""
        with self._read() as conn:
            return (*_read_rows(conn, embedder, after_rowid), _counters(conn))

    def _vector_changes(self, embedder: str, after_rowid: int, after_seq: int | None) -> dict:
        """From one snapshot: vectors added after after_rowid, snippet ids removed after after_seq
        (None when the log does not reach back, or after_seq is None), last seq and counters."""
        with self._read() as conn:
            removed, last_seq = _removals(conn, embedder, after_seq)
            ids, docs, matrix, max_rowid, pages, kinds = _read_rows(conn, embedder, after_rowid)
            return {"removed": removed, "last_seq": last_seq, "ids": ids, "docs": docs, "matrix": matrix,
                    "max_rowid": max_rowid, "state": _counters(conn), "pages": pages, "kinds": kinds}

    def load_vectors(self, embedder: str, after_rowid: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(snippet_ids int64, document ids, float32 matrix [n, dim], max rowid) for rows after after_rowid."""
        ids, docs, matrix, max_rowid, _pages, _kinds, _ = self._load_vectors(embedder, after_rowid)
        return ids, docs, matrix, max_rowid

    def _register_dims(self, conn: psycopg.Connection, dims: dict[str, set[int]]) -> None:
        for name, found in dims.items():
            if len(found) > 1:
                raise DimensionMismatch(
                    f"embedder {name!r} produced vectors of different sizes {sorted(found)} in one call")
            dim = next(iter(found))
            if conn.execute("INSERT INTO embedders(name, dim) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                            (name, dim)).rowcount and dim <= HNSW_MAX_DIM:
                conn.execute(hnsw_index_sql(dim))
            known = conn.execute("SELECT dim FROM embedders WHERE name = %s", (name,)).fetchone()["dim"]
            if known != dim:
                raise DimensionMismatch(
                    f"embedder {name!r} produced {dim}-dimensional vectors, but the database already holds "
                    f"{known}-dimensional vectors under that name; use a distinct embedder name for a "
                    f"different model (or delete_vectors({name!r}) first).")

    def _put_vector(self, conn: psycopg.Connection, snippet_id: int, embedder: str, blob: bytes) -> tuple[int, int]:
        """Insert or replace one vector; returns (added, removed)."""
        vec = np.frombuffer(blob, dtype="<f4")
        old = conn.execute("SELECT id, embedding FROM vectors WHERE snippet_id = %s AND embedder = %s",
                           (snippet_id, embedder)).fetchone()
        if old is not None and np.array_equal(as_array(old["embedding"]), vec):
            return 0, 0
        removed = 0
        if old is not None:
            # Delete + insert (a new id) rather than UPDATE: an index appending "id > last" sees it.
            conn.execute("DELETE FROM vectors WHERE id = %s", (old["id"],))
            removed = 1
        cur = conn.execute(
            """INSERT INTO vectors (snippet_id, document_id, embedder, dim, embedding)
               SELECT id, document_id, %s, %s, %s FROM snippets WHERE id = %s""",
            (embedder, int(vec.shape[0]), vec, snippet_id),
        )
        return cur.rowcount, removed

    @staticmethod
    def _bump_vectors(conn: psycopg.Connection, removed: bool) -> None:
        names = ["vectors_version", "vectors_epoch"] if removed else ["vectors_version"]
        conn.execute("UPDATE counters SET value = value + 1 WHERE name = ANY(%s)", (names,))


def _counters(conn: psycopg.Connection) -> tuple[int, int]:
    """(vectors_version, vectors_epoch) as seen by conn."""
    rows = {r["name"]: int(r["value"]) for r in conn.execute("SELECT name, value FROM counters")}
    return rows["vectors_version"], rows["vectors_epoch"]


def _removals(conn: psycopg.Connection, embedder: str, after_seq: int | None) -> tuple[list[int] | None, int]:
    """(snippet ids removed after after_seq or None if the log does not reach back, last seq)."""
    first = conn.execute("SELECT min(seq) AS s FROM vector_removals").fetchone()["s"]
    removed = None
    if after_seq is not None and (first is None or first <= after_seq + 1 or not after_seq):
        removed = [r["snippet_id"] for r in conn.execute(
            "SELECT snippet_id FROM vector_removals WHERE seq > %s AND embedder = %s ORDER BY seq",
            (after_seq, embedder))]
    last = conn.execute("SELECT coalesce(max(seq), 0) AS s FROM vector_removals").fetchone()["s"]
    return removed, int(last)


def _read_rows(conn: psycopg.Connection, embedder: str, after_rowid: int) -> tuple:
    """(snippet ids, document ids, matrix, max rowid, pages, kinds) of one embedder's vectors after after_rowid."""
    dim_row = conn.execute("SELECT dim FROM embedders WHERE name = %s", (embedder,)).fetchone()
    dim = dim_row["dim"] if dim_row else 0
    ids: list[int] = []
    docs: list[str] = []
    pages: list[int] = []
    kinds: list[str] = []
    chunks: list[np.ndarray] = []
    max_rowid = after_rowid
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT v.id, v.snippet_id, v.document_id, v.embedding, s.page, s.kind FROM vectors v "
                    "JOIN snippets s ON s.id = v.snippet_id WHERE v.embedder = %s AND v.id > %s "
                    "ORDER BY v.id", (embedder, after_rowid))
        # Chunk by chunk, so peak memory is the matrix plus one chunk of rows.
        while rows := cur.fetchmany(_LOAD_CHUNK):
            ids.extend(r["snippet_id"] for r in rows)
            docs.extend(r["document_id"] for r in rows)
            pages.extend(r["page"] for r in rows)
            kinds.extend(r["kind"] for r in rows)
            chunks.append(np.stack([as_array(r["embedding"]) for r in rows]))
            max_rowid = rows[-1]["id"]
    matrix = np.concatenate(chunks) if chunks else np.empty((0, dim), dtype=np.float32)
    return (np.asarray(ids, dtype=np.int64), np.array(docs, dtype="U16"), matrix, max_rowid,
            np.asarray(pages, dtype=np.int32), kinds)
