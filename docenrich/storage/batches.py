"""Page batches: saving a batch of snippets with their images and vectors, giving one up, completion."""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from docenrich.records import Document
from docenrich.storage.documents import DOCUMENT_COLUMNS, by_id
from docenrich.storage.encoding import Prepared, json_load, prepare_snippet
from docenrich.storage.engine import CONTENT_LOCK
from docenrich.storage.rows import completion, row_to_document
from docenrich.storage.tables import batches, documents, snippets, sparse_postings, vectors
from docenrich.storage.tables import images as image_table

if TYPE_CHECKING:
    from docenrich.records import Snippet
    from docenrich.storage.store import Garbage

log = logging.getLogger(__name__)

# Rows of one multi-row INSERT: well under PostgreSQL's 65,535 parameters at a dozen columns each.
_ROWS_PER_STATEMENT = 500


class BatchesMixin:
    """The batches table, snippet upserts by ordinal, and the ready-when-all-batches-in rule."""

    # Whether the database numbers new snippets itself (then a batch's new snippets go in together).
    _numbers_snippets = True

    def begin_batches(self, doc_id: str, total: int) -> None:
        """Record how many batches a document has (idempotent; a different total restarts it)."""
        total = int(total)
        if total < 0:
            raise ValueError("total must be >= 0")
        with self._content() as garbage, self._write("the document status", lock=CONTENT_LOCK) as conn:
            known = conn.execute(sa.select(documents.c.batches_total).where(documents.c.id == doc_id)
                                 .with_for_update()).first()
            if known is None or known[0] == total:
                return
            if known[0] is not None:
                # Batch numbering changed (e.g. another batch size): the old batches mean nothing now.
                log.warning("document %s: batches_total %s -> %s, restarting its batches", doc_id, known[0], total)
                self._clear_content(conn, doc_id, garbage)
            self._recount(conn, doc_id, total)

    def done_batches(self, doc_id: str) -> set[int]:
        """Indexes of the batches already saved for a document."""
        return {r["batch_index"] for r in self._all(
            sa.select(batches.c.batch_index).where(batches.c.document_id == doc_id))}

    def _recount(self, conn: sa.Connection, doc_id: str, total: int | None,
                 embedder: str | None = None) -> sa.RowMapping:
        """The document's counts (and state, once every batch is in) from its rows; its updated row."""
        count = sa.select(sa.func.count())
        values: dict[str, Any] = {
            "snippet_count": conn.execute(count.where(snippets.c.document_id == doc_id)).scalar(),
            "batches_done": conn.execute(count.where(batches.c.document_id == doc_id)).scalar(),
            "batches_total": total, "updated_at": time.time(),
        }
        if embedder is not None:
            values["embedder"] = embedder
        if total is not None:
            done = values["batches_done"]
            values.update(completion(conn, doc_id, total) if done >= total else {"progress": done / total})
        return conn.execute(sa.update(documents).where(documents.c.id == doc_id).values(**values)
                            .returning(*DOCUMENT_COLUMNS)).mappings().one()

    def fail_batch(self, doc_id: str, batch_index: int, generation: int, note: str) -> Document | None:
        """Record a page batch as given up (done, no snippets, `note` says why); None if the document
        is gone or has moved on to another run. Idempotent: a batch already done is left as it is."""
        with self._write("a failed page batch") as conn:
            doc = conn.execute(sa.select(documents.c.batches_total, documents.c.state, documents.c.generation)
                               .where(documents.c.id == doc_id)).mappings().first()
            if doc is None or doc["generation"] != int(generation) or doc["state"] in ("failed", "cancelled"):
                return None
            conn.execute(self._insert(batches).values(
                document_id=doc_id, batch_index=int(batch_index), snippet_count=0, done_at=time.time(), note=note,
            ).on_conflict_do_nothing())
            return row_to_document(self._recount(conn, doc_id, doc["batches_total"]))

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
        images = {p.columns["image"]: p.image_data for p in prepared if p.image_data is not None}
        # CONTENT_LOCK: vector ids commit in id order ("id > last loaded" stays exact for an
        # in-memory index) and an image is never dropped while a snippet starts using it.
        with self._content(images=images) as garbage:
            with self._write("the extracted snippets", lock=CONTENT_LOCK) as conn:
                row = self._store_batch(conn, doc_id, batch_index, prepared, images, garbage, generation)
            garbage.check_new = row is None
        self._vectors_saved({p.embedder for p in prepared if p.embedder})
        if row is None:
            return None
        doc = row_to_document(row)
        log.debug("document %s: batch %d saved (%d snippets, %d/%s batches)",
                  doc_id, batch_index, len(prepared), doc.batches_done, doc.batches_total)
        return doc

    def _store_batch(
        self, conn: sa.Connection, doc_id: str, batch_index: int, prepared: list[Prepared],
        images: dict[str, bytes], garbage: Garbage, generation: int | None = None,
    ) -> sa.RowMapping | None:
        """Inside the write transaction: the rows of one batch; the updated document row or None."""
        doc = conn.execute(sa.select(documents.c.batches_total, documents.c.state, documents.c.generation,
                                     documents.c.title).where(documents.c.id == doc_id).with_for_update()
                           ).mappings().first()
        if doc is None or (generation is not None and doc["generation"] != int(generation)):
            return None
        if doc["state"] in ("failed", "cancelled"):
            # A late batch must not bring a failed or cancelled document back (not a legal move).
            return conn.execute(by_id(doc_id)).mappings().one()
        total = doc["batches_total"]
        if total is not None and batch_index >= total:
            raise ValueError(f"batch_index {batch_index} out of range for {total} batches")
        self._put(conn, image_table, images)
        self._register_dims(conn, [(p.embedder, len(p.vector)) for p in prepared if p.embedder])
        # Upsert by (document_id, ordinal). Snippets missing from a re-save are kept:
        # callers save an empty batch to re-check completion, which must not erase it.
        fresh: list[Prepared] = []
        if self._numbers_snippets and prepared:
            # New snippets in a few statements, not four round trips each (what bounds a remote database).
            taken = set(conn.scalars(sa.select(snippets.c.ordinal).where(
                snippets.c.document_id == doc_id, snippets.c.ordinal.in_([p.ordinal for p in prepared]))))
            fresh = [p for p in prepared if p.ordinal not in taken]
        fresh_ordinals = {p.ordinal for p in fresh}
        counts = [self._upsert_snippet(conn, doc_id, batch_index, p, doc["title"], garbage)
                  for p in prepared if p.ordinal not in fresh_ordinals]
        if fresh:
            counts.append(self._insert_snippets(conn, doc_id, batch_index, fresh, doc["title"]))
        self._drop_unused(conn, garbage)
        count = sa.select(sa.func.count()).where(snippets.c.document_id == doc_id, snippets.c.batch_index == batch_index)
        insert = self._insert(batches).values(document_id=doc_id, batch_index=batch_index,
                                              snippet_count=count.scalar_subquery(), done_at=time.time())
        conn.execute(insert.on_conflict_do_update(
            index_elements=["document_id", "batch_index"],
            set_={"snippet_count": insert.excluded.snippet_count, "done_at": insert.excluded.done_at}))
        self._bump_vectors(conn, sum(a for a, _ in counts), sum(r for _, r in counts))
        used = Counter(p.embedder for p in prepared if p.embedder)
        return self._recount(conn, doc_id, total, used.most_common(1)[0][0] if used else None)

    def _insert_snippets(
        self, conn: sa.Connection, doc_id: str, batch_index: int, fresh: list[Prepared], title: str,
    ) -> tuple[int, int]:
        """Insert snippets whose ordinals are new, with their vectors and sparse postings, a chunk of
        rows per statement; returns (vectors added, 0)."""
        table, ids = self._snippet_table, {}
        for start in range(0, len(fresh), _ROWS_PER_STATEMENT):
            rows = [{**p.columns, "document_id": doc_id, "ordinal": p.ordinal, "batch_index": batch_index,
                     **self._lex(p.columns["text"], json_load(p.columns["meta"], {}).get("heading"), title)}
                    for p in fresh[start:start + _ROWS_PER_STATEMENT]]
            found = conn.execute(sa.insert(table).values(rows).returning(table.c.id, table.c.ordinal))
            ids.update((int(ordinal), int(sid)) for sid, ordinal in found)
        with_vectors = [p for p in fresh if p.vector is not None]
        for start in range(0, len(with_vectors), _ROWS_PER_STATEMENT):
            conn.execute(sa.insert(vectors).values([
                {"snippet_id": ids[p.ordinal], "document_id": doc_id, "embedder": p.embedder, "dim": len(p.vector),
                 "embedding": p.vector} for p in with_vectors[start:start + _ROWS_PER_STATEMENT]]))
        postings = [{"embedder": p.embedder, "token": t, "snippet_id": ids[p.ordinal], "weight": w}
                    for p in with_vectors if p.sparse for t, w in p.sparse]
        if postings:
            conn.execute(sa.insert(sparse_postings), postings)
        return len(with_vectors), 0

    def _upsert_snippet(
        self, conn: sa.Connection, doc_id: str, batch_index: int, p: Prepared, title: str, garbage: Garbage,
    ) -> tuple[int, int]:
        """Insert or update one snippet and its vector; returns (vectors added, vectors removed)."""
        removed = 0
        text, image = p.columns["text"], p.columns["image"]
        values = {**p.columns, "batch_index": batch_index,
                  **self._lex(text, json_load(p.columns["meta"], {}).get("heading"), title)}
        old = conn.execute(sa.select(snippets.c.id, snippets.c.text, snippets.c.image).where(
            snippets.c.document_id == doc_id, snippets.c.ordinal == p.ordinal)).mappings().first()
        if old is None:
            sid = conn.execute(sa.insert(self._snippet_table).values(
                document_id=doc_id, ordinal=p.ordinal, **values, **self._new_snippet_id(),
            ).returning(snippets.c.id)).scalar_one()
        else:
            sid = old["id"]
            table = self._snippet_table
            conn.execute(sa.update(table).where(table.c.id == sid).values(**values))
            if (old["text"], old["image"]) != (text, image):
                # Content changed: vectors of every embedder for it are stale.
                removed += conn.execute(sa.delete(vectors).where(vectors.c.snippet_id == sid)).rowcount
                if old["image"] and old["image"] != image:
                    garbage.images.add(old["image"])
        if p.vector is None:
            return 0, removed
        added, replaced = self._put_vector(conn, sid, p.embedder, p.vector)
        if p.sparse is not None:
            self._put_sparse(conn, sid, p.embedder, p.sparse)
        return added, removed + replaced
