"""Page batches: saving a batch of snippets with their images and vectors, and completion."""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from docenrich.records import Document
from docenrich.storage.encoding import Prepared, json_load, prepare_snippet
from docenrich.storage.postgres.lexical import lex_vector
from docenrich.storage.postgres.rows import row_to_document
from docenrich.storage.postgres.schema import CONTENT_LOCK
from docenrich.storage.rows import GivenUpBatches, completion

if TYPE_CHECKING:
    import psycopg

    from docenrich.records import Snippet

log = logging.getLogger(__name__)


class BatchesMixin(GivenUpBatches):
    """The batches table, snippet upserts by ordinal, and the ready-when-all-batches-in rule."""

    _PH = "%s"

    def begin_batches(self, doc_id: str, total: int) -> None:
        """Record how many batches a document has (idempotent; a different total restarts it)."""
        total = int(total)
        if total < 0:
            raise ValueError("total must be >= 0")
        with self._write("the document status", lock=CONTENT_LOCK) as conn:
            row = conn.execute("SELECT batches_total FROM documents WHERE id = %s FOR UPDATE", (doc_id,)).fetchone()
            if row is None or row["batches_total"] == total:
                return
            if row["batches_total"] is not None:
                # Batch numbering changed (e.g. another batch size): the old batches mean nothing now.
                log.warning("document %s: batches_total %s -> %s, restarting its batches",
                            doc_id, row["batches_total"], total)
                if self._clear_content(conn, doc_id):
                    self._bump_vectors(conn, removed=True)
            self._recount(conn, doc_id, total)

    def done_batches(self, doc_id: str) -> set[int]:
        """Indexes of the batches already saved for a document."""
        rows = self._q("SELECT batch_index FROM batches WHERE document_id = %s", (doc_id,))
        return {r["batch_index"] for r in rows}

    def _recount(self, conn: psycopg.Connection, doc_id: str, total: int | None, embedder: str | None = None) -> dict:
        snippet_count = conn.execute("SELECT count(*) AS n FROM snippets WHERE document_id = %s", (doc_id,)).fetchone()["n"]
        done = conn.execute("SELECT count(*) AS n FROM batches WHERE document_id = %s", (doc_id,)).fetchone()["n"]
        sets = ["snippet_count = %s", "batches_total = %s", "batches_done = %s", "updated_at = %s"]
        args: list[Any] = [snippet_count, total, done, time.time()]
        if embedder is not None:
            sets.append("embedder = %s")
            args.append(embedder)
        if total is not None:
            if done >= total:
                for column, value in completion(conn, self._PH, doc_id, total).items():
                    sets.append(f"{column} = %s")
                    args.append(value)
            else:
                sets.append("progress = %s")
                args.append(done / total)
        return conn.execute(
            f"UPDATE documents SET {', '.join(sets)} WHERE id = %s RETURNING *", (*args, doc_id)
        ).fetchone()

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
        images = {p.image_name: p.image_data for p in prepared if p.image_name}
        # CONTENT_LOCK: vector ids then commit in id order ("id > last loaded" stays exact for
        # an in-memory index) and an image row is never dropped while a snippet starts using it.
        with self._write("the extracted snippets", lock=CONTENT_LOCK) as conn:
            row = self._store_batch(conn, doc_id, batch_index, prepared, images, generation)
        if row is None:
            return None
        doc = row_to_document(row)
        log.debug("document %s: batch %d saved (%d snippets, %d/%s batches)",
                  doc_id, batch_index, len(prepared), doc.batches_done, doc.batches_total)
        return doc

    def _store_batch(
        self, conn: psycopg.Connection, doc_id: str, batch_index: int, prepared: list[Prepared],
        images: dict[str, bytes], generation: int | None = None,
    ) -> dict | None:
        """Inside the write transaction: the rows of one batch; the updated document row or None."""
        doc = conn.execute(
            "SELECT batches_total, state, generation, title FROM documents WHERE id = %s FOR UPDATE", (doc_id,)
        ).fetchone()
        if doc is None or (generation is not None and doc["generation"] != int(generation)):
            return None
        if doc["state"] in ("failed", "cancelled"):
            # A late batch must not bring a failed or cancelled document back (not a legal move).
            return conn.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()
        total = doc["batches_total"]
        if total is not None and batch_index >= total:
            raise ValueError(f"batch_index {batch_index} out of range for {total} batches")
        for name, data in images.items():
            conn.execute("INSERT INTO images(name, data) VALUES (%s, %s) ON CONFLICT DO NOTHING", (name, data))
        dims: dict[str, set[int]] = {}
        for p in prepared:
            if p.embedder:
                dims.setdefault(p.embedder, set()).add(p.dim)
        self._register_dims(conn, dims)
        added = removed = 0
        stale: set[str] = set()
        # Upsert by (document_id, ordinal); snippets missing from a re-save are kept.
        for p in prepared:
            a, r = self._upsert_snippet(conn, doc_id, batch_index, p, doc["title"], stale)
            added, removed = added + a, removed + r
        self._drop_unused_images(conn, stale)
        conn.execute(
            """INSERT INTO batches (document_id, batch_index, snippet_count, done_at)
               VALUES (%s, %s, (SELECT count(*) FROM snippets WHERE document_id = %s AND batch_index = %s), %s)
               ON CONFLICT (document_id, batch_index)
               DO UPDATE SET snippet_count = excluded.snippet_count, done_at = excluded.done_at""",
            (doc_id, batch_index, doc_id, batch_index, time.time()),
        )
        if added or removed:
            self._bump_vectors(conn, removed=bool(removed))
        used = Counter(p.embedder for p in prepared if p.embedder)
        return self._recount(conn, doc_id, total, used.most_common(1)[0][0] if used else None)

    def _upsert_snippet(
        self, conn: psycopg.Connection, doc_id: str, batch_index: int, p: Prepared, title: str, stale: set[str]
    ) -> tuple[int, int]:
        """Insert or update one snippet and its vector; returns (vectors added, vectors removed)."""
        removed = 0
        lex = lex_vector(p.text, json_load(p.meta, {}).get("heading"), title)
        old = conn.execute(
            "SELECT id, text, image FROM snippets WHERE document_id = %s AND ordinal = %s", (doc_id, p.ordinal)
        ).fetchone()
        if old is None:
            sid = conn.execute(
                """INSERT INTO snippets (document_id, ordinal, batch_index, page, bbox, text, kind, meta, image, lex)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::tsvector) RETURNING id""",
                (doc_id, p.ordinal, batch_index, p.page, p.bbox, p.text, p.kind, p.meta, p.image_name, lex),
            ).fetchone()["id"]
        else:
            sid = old["id"]
            conn.execute(
                """UPDATE snippets SET batch_index = %s, page = %s, bbox = %s, text = %s, kind = %s, meta = %s,
                       image = %s, lex = %s::tsvector WHERE id = %s""",
                (batch_index, p.page, p.bbox, p.text, p.kind, p.meta, p.image_name, lex, sid),
            )
            if (old["text"], old["image"]) != (p.text, p.image_name):
                # Content changed: vectors of every embedder for it are stale.
                removed += conn.execute("DELETE FROM vectors WHERE snippet_id = %s", (sid,)).rowcount
                if old["image"] and old["image"] != p.image_name:
                    stale.add(old["image"])
        if p.vector is None:
            return 0, removed
        added, replaced = self._put_vector(conn, sid, p.embedder, p.vector)
        if p.sparse is not None:
            self._put_sparse(conn, sid, p.embedder, p.sparse)
        return added, removed + replaced
