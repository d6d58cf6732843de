"""Page batches: saving a batch of snippets with their images and vectors, and completion."""
from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from docenrich.records import Document
from docenrich.storage.encoding import Prepared, prepare_snippet
from docenrich.storage.rows import GivenUpBatches, completion
from docenrich.storage.sqlite.blobs import atomic_write, blob_present
from docenrich.storage.sqlite.rows import row_to_document

if TYPE_CHECKING:
    from docenrich.records import Snippet

log = logging.getLogger(__name__)


class BatchesMixin(GivenUpBatches):
    """The batches table, snippet upserts by ordinal, and the ready-when-all-batches-in rule."""

    def begin_batches(self, doc_id: str, total: int) -> None:
        """Record how many batches a document has (idempotent; a different total restarts it)."""
        total = int(total)
        if total < 0:
            raise ValueError("total must be >= 0")
        stale_images: set[str] = set()
        with self._write("the document status") as conn:
            row = conn.execute("SELECT batches_total FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if row is None or row["batches_total"] == total:
                return
            if row["batches_total"] is not None:
                # Batch numbering changed (e.g. different batch size): old batches mean nothing now.
                log.warning(
                    "document %s: batches_total %s -> %s, restarting its batches", doc_id, row["batches_total"], total
                )
                stale_images, removed = self._clear_content(conn, doc_id)
                if removed:
                    self._bump_vectors(conn, removed=True)
            self._recount(conn, doc_id, total)
        if stale_images:
            self._collect(images=stale_images)

    def done_batches(self, doc_id: str) -> set[int]:
        """Indexes of the batches already saved for a document."""
        rows = self._conn().execute("SELECT batch_index FROM batches WHERE document_id = ?", (doc_id,))
        return {r[0] for r in rows}

    def _recount(
        self, conn: sqlite3.Connection, doc_id: str, total: int | None, embedder: str | None = None
    ) -> sqlite3.Row:
        # fetchall, not fetchone: an unfinished RETURNING statement would block the COMMIT.
        snippet_count = conn.execute("SELECT count(*) FROM snippets WHERE document_id = ?", (doc_id,)).fetchone()[0]
        done = conn.execute("SELECT count(*) FROM batches WHERE document_id = ?", (doc_id,)).fetchone()[0]
        sets = ["snippet_count = ?", "batches_total = ?", "batches_done = ?", "updated_at = ?"]
        args: list[Any] = [snippet_count, total, done, time.time()]
        if embedder is not None:
            sets.append("embedder = ?")
            args.append(embedder)
        if total is not None:
            if done >= total:
                for column, value in completion(conn, self._PH, doc_id, total).items():
                    sets.append(f"{column} = ?")
                    args.append(value)
            else:
                sets.append("progress = ?")
                args.append(done / total)
        return conn.execute(
            f"UPDATE documents SET {', '.join(sets)} WHERE id = ? RETURNING *", (*args, doc_id)
        ).fetchall()[0]

    def save_batch(
        self, doc_id: str, batch_index: int, snippets: list[Snippet], generation: int | None = None
    ) -> Document | None:
        """Idempotently upsert one batch of snippets (+images, vectors) by ordinal; None if the doc is
        gone or (with generation) has moved on to another run. A failed document takes no batch."""
        batch_index = int(batch_index)
        if batch_index < 0:
            raise ValueError("batch_index must be >= 0")
        if self.get_document(doc_id) is None:
            return None
        seen: set[int] = set()
        prepared = [prepare_snippet(doc_id, s, seen) for s in snippets]
        images: dict[str, bytes] = {p.image_name: p.image_data for p in prepared if p.image_name}
        new_files: list[str] = []
        stale_images: set[str] = set()
        committed = False
        row = None
        try:
            self._write_new_images(images, new_files)
            with self._write("the extracted snippets") as conn:
                row = self._store_batch(conn, doc_id, batch_index, prepared, images, stale_images, generation)
            committed = True
        finally:
            if not committed or row is None:
                # Rolled back, or the document went away meanwhile: our new files are unused.
                stale_images.update(new_files)
            if stale_images:
                self._collect(images=stale_images)
        if row is None:
            return None
        doc = row_to_document(row)
        log.debug(
            "document %s: batch %d saved (%d snippets, %d/%s batches)",
            doc_id, batch_index, len(prepared), doc.batches_done, doc.batches_total,
        )
        return doc

    def _write_new_images(self, images: dict[str, bytes], new_files: list[str]) -> None:
        """Write the images not on disk yet, listing each in new_files as soon as it exists."""
        for name, data in images.items():
            path = self.image_dir / name
            if not blob_present(path, len(data)):
                atomic_write(path, data, "a snippet image")
                new_files.append(name)

    def _store_batch(
        self,
        conn: sqlite3.Connection,
        doc_id: str,
        batch_index: int,
        prepared: list[Prepared],
        images: dict[str, bytes],
        stale_images: set[str],
        generation: int | None = None,
    ) -> sqlite3.Row | None:
        """Inside the write transaction: the rows of one batch; the updated document row or None."""
        doc = conn.execute(
            "SELECT batches_total, state, generation FROM documents WHERE id = ?", (doc_id,)
        ).fetchone()
        if doc is None or (generation is not None and doc["generation"] != int(generation)):
            return None
        if doc["state"] in ("failed", "cancelled"):
            # A late batch must not bring a failed or cancelled document back (not a legal move).
            return conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchall()[0]
        total = doc["batches_total"]
        if total is not None and batch_index >= total:
            raise ValueError(f"batch_index {batch_index} out of range for {total} batches")
        for name, data in images.items():
            self._ensure_file(self.image_dir / name, data, "a snippet image")
        dims: dict[str, set[int]] = {}
        for p in prepared:
            if p.embedder:
                dims.setdefault(p.embedder, set()).add(p.dim)
        self._register_dims(conn, dims)
        added = removed = 0
        # Upsert by (document_id, ordinal). Snippets missing from a re-save are kept:
        # callers save an empty batch to re-check completion, which must not erase it.
        for p in prepared:
            a, r = self._upsert_snippet(conn, doc_id, batch_index, p, stale_images)
            added += a
            removed += r
        conn.execute(
            """INSERT INTO batches (document_id, batch_index, snippet_count, done_at)
               VALUES (?, ?, (SELECT count(*) FROM snippets WHERE document_id = ? AND batch_index = ?), ?)
               ON CONFLICT (document_id, batch_index)
               DO UPDATE SET snippet_count = excluded.snippet_count, done_at = excluded.done_at""",
            (doc_id, batch_index, doc_id, batch_index, time.time()),
        )
        if added or removed:
            self._bump_vectors(conn, removed=bool(removed))
        used = Counter(p.embedder for p in prepared if p.embedder)
        embedder = used.most_common(1)[0][0] if used else None
        return self._recount(conn, doc_id, total, embedder)

    def _upsert_snippet(
        self, conn: sqlite3.Connection, doc_id: str, batch_index: int, p: Prepared, stale_images: set[str]
    ) -> tuple[int, int]:
        """Insert or update one snippet and its vector; returns (vectors added, vectors removed)."""
        removed = 0
        old = conn.execute(
            "SELECT id, text, image FROM snippets WHERE document_id = ? AND ordinal = ?",
            (doc_id, p.ordinal),
        ).fetchone()
        if old is None:
            cur = conn.execute(
                """INSERT INTO snippets
                       (id, document_id, ordinal, batch_index, page, bbox, text, kind, meta, image)
                   VALUES ((SELECT value + 1 FROM counters WHERE name = 'snippet_id_seq'), ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (doc_id, p.ordinal, batch_index, p.page, p.bbox, p.text, p.kind, p.meta, p.image_name),
            )
            sid = cur.lastrowid
        else:
            sid = old["id"]
            conn.execute(
                """UPDATE snippets SET batch_index = ?, page = ?, bbox = ?, text = ?, kind = ?, meta = ?,
                       image = ? WHERE id = ?""",
                (batch_index, p.page, p.bbox, p.text, p.kind, p.meta, p.image_name, sid),
            )
            if (old["text"], old["image"]) != (p.text, p.image_name):
                # Content changed: vectors of every embedder for it are stale.
                removed += conn.execute("DELETE FROM vectors WHERE snippet_id = ?", (sid,)).rowcount
                if old["image"] and old["image"] != p.image_name:
                    stale_images.add(old["image"])
        if p.vector is None:
            return 0, removed
        added, replaced = self._put_vector(conn, sid, p.embedder, p.dim, p.vector)
        if p.sparse is not None:
            self._put_sparse(conn, sid, p.embedder, p.sparse)
        return added, removed + replaced
