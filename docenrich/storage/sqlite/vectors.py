"""Vectors: per-embedder tables of float32 blobs, their registered dimensions and change counters."""
from __future__ import annotations

import json
import sqlite3

import numpy as np

from docenrich.storage.base import DimensionMismatch
from docenrich.storage.encoding import as_vector
from docenrich.storage.rows import unchanged

_LOAD_CHUNK = 4096


class VectorsMixin:
    """The vectors, embedders and counters tables."""

    def embedder_counts(self) -> dict[str, int]:
        """Number of stored vectors per embedder name."""
        rows = self._conn().execute("SELECT embedder, count(*) FROM vectors GROUP BY embedder ORDER BY embedder")
        return {r[0]: r[1] for r in rows}

    def embedder_dims(self) -> dict[str, int]:
        """Vector dimension registered for each embedder name."""
        return {r[0]: r[1] for r in self._conn().execute("SELECT name, dim FROM embedders ORDER BY name")}

    def save_vectors(self, items: list[tuple[int, np.ndarray]], embedder: str,
                     digests: dict[int, str] | None = None) -> None:
        """Store (snippet_id, vector) pairs for `embedder`; ids of deleted snippets are skipped, and so are
        those whose text no longer has the digest given for it (the vector was made from other text)."""
        if not embedder:
            raise ValueError("embedder name is required")
        prepared = [(int(sid), as_vector(vec, f"snippet {sid}")) for sid, vec in items]
        if not prepared:
            return
        with self._write("the vectors") as conn:
            prepared = unchanged(conn, "?", prepared, digests)
            if not prepared:
                return
            self._register_dims(conn, {embedder: {v.shape[0] for _, v in prepared}})
            added = removed = 0
            for sid, vec in prepared:
                a, r = self._put_vector(conn, sid, embedder, int(vec.shape[0]), vec.tobytes())
                added += a
                removed += r
            if added or removed:
                self._bump_vectors(conn, removed=bool(removed))
            # A document names the embedder of its vectors: after a re-embed, the new one
            # (once every snippet of the document has a vector from it).
            conn.execute(
                """UPDATE documents SET embedder = ? WHERE id IN (
                       SELECT DISTINCT s.document_id FROM snippets s WHERE s.id IN (SELECT value FROM json_each(?)))
                   AND NOT EXISTS (SELECT 1 FROM snippets s WHERE s.document_id = documents.id AND NOT EXISTS
                       (SELECT 1 FROM vectors v WHERE v.snippet_id = s.id AND v.embedder = ?))""",
                (embedder, json.dumps([sid for sid, _ in prepared]), embedder),
            )

    def unindexed_count(self, embedder: str) -> int:
        """Snippets without a vector from `embedder`, from counts the triggers keep (no scan)."""
        row = self._conn().execute(
            """SELECT (SELECT value FROM counters WHERE name = 'snippets_total')
                    - coalesce((SELECT vector_count FROM embedders WHERE name = ?), 0)""",
            (embedder,),
        ).fetchone()
        return max(0, int(row[0] or 0))

    def vector_removals(self, embedder: str, after_seq: int) -> tuple[list[int], int] | None:
        """(snippet ids whose `embedder` vector was removed after after_seq, last seq); None if
        the log no longer reaches back that far."""
        conn = self._conn()
        first = conn.execute("SELECT min(seq) FROM vector_removals").fetchone()[0]
        if first is not None and after_seq and first > after_seq + 1:
            return None
        rows = conn.execute(
            "SELECT seq, snippet_id FROM vector_removals WHERE seq > ? AND embedder = ? ORDER BY seq",
            (int(after_seq), embedder),
        ).fetchall()
        last = conn.execute("SELECT coalesce(max(seq), 0) FROM vector_removals").fetchone()[0]
        return [r[1] for r in rows], max(int(after_seq), int(last))

    def delete_vectors(self, embedder: str) -> int:
        """Drop every vector of one embedder (and its registered dimension); returns the count."""
        with self._write("the vectors") as conn:
            n = conn.execute("DELETE FROM vectors WHERE embedder = ?", (embedder,)).rowcount
            conn.execute("DELETE FROM embedders WHERE name = ?", (embedder,))
            if n:
                self._bump_vectors(conn, removed=True)
        return n

    def vectors_version(self) -> int:
        """Counter bumped by every change to stored vectors."""
        return self.vectors_state()[0]

    def vectors_state(self) -> tuple[int, int]:
        """(version, epoch): version moves on any vector change, epoch only on removals/replacements."""
        return _counters(self._conn())

    def _load_vectors(
        self, embedder: str, after_rowid: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, tuple[int, int]]:
        """load_vectors plus the (version, epoch) of the same snapshot."""
        with self._read() as conn:
            return (*_read_rows(conn, embedder, after_rowid), _counters(conn))

    def _vector_changes(self, embedder: str, after_rowid: int, after_seq: int | None) -> dict:
        """From one snapshot: vectors added after after_rowid, snippet ids whose vector was removed
        after after_seq (None when the log does not reach back, or after_seq is None), the last
        removal seq and the (version, epoch) counters."""
        with self._read() as conn:
            removed = None
            first = conn.execute("SELECT min(seq) FROM vector_removals").fetchone()[0]
            if after_seq is not None and (first is None or first <= after_seq + 1 or not after_seq):
                removed = [r[0] for r in conn.execute(
                    "SELECT snippet_id FROM vector_removals WHERE seq > ? AND embedder = ?", (after_seq, embedder)
                )]
            last_seq = conn.execute("SELECT coalesce(max(seq), 0) FROM vector_removals").fetchone()[0]
            ids, docs, matrix, max_rowid, pages, kinds = _read_rows(conn, embedder, after_rowid)
            return {"removed": removed, "last_seq": last_seq, "ids": ids, "docs": docs, "matrix": matrix,
                    "max_rowid": max_rowid, "state": _counters(conn), "pages": pages, "kinds": kinds}

    def load_vectors(self, embedder: str, after_rowid: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(snippet_ids int64, document ids, float32 matrix [n, dim], max rowid) for rows after after_rowid."""
        ids, docs, matrix, max_rowid, _pages, _kinds, _ = self._load_vectors(embedder, after_rowid)
        return ids, docs, matrix, max_rowid

    def _register_dims(self, conn: sqlite3.Connection, dims: dict[str, set[int]]) -> None:
        for name, found in dims.items():
            if len(found) > 1:
                raise DimensionMismatch(
                    f"embedder {name!r} produced vectors of different sizes {sorted(found)} in one call"
                )
            dim = next(iter(found))
            conn.execute("INSERT OR IGNORE INTO embedders(name, dim) VALUES (?, ?)", (name, dim))
            known = conn.execute("SELECT dim FROM embedders WHERE name = ?", (name,)).fetchone()[0]
            if known != dim:
                raise DimensionMismatch(
                    f"embedder {name!r} produced {dim}-dimensional vectors, but the database already holds "
                    f"{known}-dimensional vectors under that name; use a distinct embedder name for a "
                    f"different model (or delete_vectors({name!r}) first)."
                )

    def _put_vector(
        self, conn: sqlite3.Connection, snippet_id: int, embedder: str, dim: int, blob: bytes
    ) -> tuple[int, int]:
        """Insert or replace one vector; returns (added, removed)."""
        old = conn.execute(
            "SELECT id, vector FROM vectors WHERE snippet_id = ? AND embedder = ?", (snippet_id, embedder)
        ).fetchone()
        if old is not None and old["vector"] == blob:
            return 0, 0
        removed = 0
        if old is not None:
            # Delete + insert (new id) rather than UPDATE: an index appending "id > last"
            # would never see an in-place change.
            conn.execute("DELETE FROM vectors WHERE id = ?", (old["id"],))
            removed = 1
        cur = conn.execute(
            """INSERT INTO vectors (snippet_id, document_id, embedder, dim, vector)
               SELECT id, document_id, ?, ?, ? FROM snippets WHERE id = ?""",
            (embedder, dim, blob, snippet_id),
        )
        return cur.rowcount, removed

    @staticmethod
    def _bump_vectors(conn: sqlite3.Connection, removed: bool) -> None:
        names = ("vectors_version", "vectors_epoch") if removed else ("vectors_version",)
        conn.executemany("UPDATE counters SET value = value + 1 WHERE name = ?", [(n,) for n in names])


def _counters(conn: sqlite3.Connection) -> tuple[int, int]:
    """(vectors_version, vectors_epoch) as seen by conn."""
    rows = dict(conn.execute("SELECT name, value FROM counters").fetchall())
    return rows["vectors_version"], rows["vectors_epoch"]


def _read_rows(conn: sqlite3.Connection, embedder: str, after_rowid: int) -> tuple:
    """(snippet ids, document ids, matrix, max rowid, pages, kinds) of one embedder's vectors after after_rowid."""
    dim_row = conn.execute("SELECT dim FROM embedders WHERE name = ?", (embedder,)).fetchone()
    dim = dim_row[0] if dim_row else 0
    n = conn.execute("SELECT count(*) FROM vectors WHERE embedder = ? AND id > ?", (embedder, after_rowid)).fetchone()[0]
    ids = np.empty(n, dtype=np.int64)
    matrix = np.empty((n, dim), dtype=np.float32)
    pages = np.empty(n, dtype=np.int32)
    docs: list[str] = []
    kinds: list[str] = []
    max_rowid = after_rowid
    # Each row's page and kind come along, so filters apply inside the in-memory index too.
    cur = conn.execute(
        """SELECT v.id, v.snippet_id, v.document_id, v.vector, s.page, s.kind FROM vectors v
           JOIN snippets s ON s.id = v.snippet_id WHERE v.embedder = ? AND v.id > ? ORDER BY v.id""",
        (embedder, after_rowid),
    )
    i = 0
    # Filled chunk by chunk so peak memory is the matrix plus one chunk of blobs.
    while rows := cur.fetchmany(_LOAD_CHUNK):
        for _rowid, sid, doc, blob, page, kind in rows:
            ids[i] = sid
            matrix[i] = np.frombuffer(blob, dtype="<f4")
            pages[i] = page
            docs.append(doc)
            kinds.append(kind)
            i += 1
        max_rowid = rows[-1][0]
    return ids[:i], np.array(docs, dtype="U16"), matrix[:i], max_rowid, pages[:i], kinds
