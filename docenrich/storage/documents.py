"""Documents: uploads under the admission cap, compare-and-set status updates, restart, cancel, deletion."""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from docenrich.filters import SearchFilter
from docenrich.records import FINISHED_STATES, RESTARTABLE_STATES, Document, states_before
from docenrich.storage.base import QueueFull, StorageError, default_collections, sanitize_filename
from docenrich.storage.encoding import doc_id_for, is_doc_id
from docenrich.storage.engine import ADMISSION_LOCK, CONTENT_LOCK
from docenrich.storage.filters import document_conditions
from docenrich.storage.rows import UPDATABLE, column_values, info_columns, positive, row_to_document
from docenrich.storage.tables import (
    batches,
    document_collections,
    documents,
    pdfs,
    snippets,
    vectors,
)

if TYPE_CHECKING:
    from docenrich.pdf import DocumentInfo
    from docenrich.storage.store import Garbage

log = logging.getLogger(__name__)

DOCUMENT_COLUMNS = tuple(documents.c)
UNFINISHED = documents.c.state.not_in(("ready", "failed", "cancelled"))
# A new run: no output yet, and a new generation, so the tasks of the old run do nothing.
_NEW_RUN = {"progress": 0, "error": None, "snippet_count": 0, "batches_total": None, "batches_done": 0,
            "embedder": None, "generation": documents.c.generation + 1}


def by_id(doc_id: str) -> sa.Select:
    """The query of one document's row."""
    return sa.select(*DOCUMENT_COLUMNS).where(documents.c.id == doc_id)


class DocumentsMixin:
    """The documents table and the PDFs its rows name."""

    def add_document(
        self, data: bytes, filename: str, info: DocumentInfo | None = None,
        collections: Iterable[str] | None = None, *,
        batch_pages: int | None = None, max_queued: int | None = None,
    ) -> tuple[Document, bool]:
        """Store an uploaded PDF in collections (default: the default one); (doc, created), the same bytes
        being one document. With max_queued, QueueFull when that many wait (decided under the write lock)."""
        if not data:
            raise ValueError("The uploaded file is empty.")
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        with self._content(pdfs={sha: data}) as garbage:
            # The admission lock serialises uploads; the content lock keeps a concurrent deletion
            # from removing the PDF between our check and our insert.
            with self._write("the uploaded PDF", lock=ADMISSION_LOCK) as conn:
                self._lock(conn, CONTENT_LOCK)
                row, created = self._upsert_document(conn, sha, data, filename, info, batch_pages, max_queued,
                                                     garbage)
                # A new document goes to the default collection unless named ones are given;
                # a known one only joins the collections named this time.
                self._link(conn, row["id"], default_collections(collections) if created else collections or [])
        doc = row_to_document(row)
        log.info("document %s %s (%s, %d bytes)", doc.id, "added" if created else "already present",
                 doc.filename, doc.size)
        return doc, created

    def _upsert_document(
        self, conn: sa.Connection, sha: str, data: bytes, filename: str, info: DocumentInfo | None,
        batch_pages: int | None, max_queued: int | None, garbage: Garbage,
    ) -> tuple[sa.RowMapping, bool]:
        """Insert a new document or restart a failed one; returns (row, created)."""
        doc_id = doc_id_for(sha)
        now = time.time()
        row = conn.execute(by_id(doc_id)).mappings().first()
        if row is not None and row["sha256"] != sha:
            raise StorageError("Two different PDFs map to the same document id; cannot store this one.")
        if max_queued is not None and (row is None or row["state"] in RESTARTABLE_STATES):
            # Counted inside the write lock: no two admissions see the same count.
            waiting = conn.execute(sa.select(sa.func.count()).where(UNFINISHED)).scalar()
            if waiting >= max_queued:
                raise QueueFull(waiting)
        self._put(conn, pdfs, {sha: data})
        about = {} if info is None else info_columns(info)
        if row is None:
            conn.execute(sa.insert(documents).values(
                id=doc_id, sha256=sha, filename=sanitize_filename(filename), size=len(data), state="queued",
                stage="Queued", progress=0, batch_pages=positive(batch_pages), created_at=now, updated_at=now,
                **about))
        elif row["state"] in RESTARTABLE_STATES:
            self._new_run(conn, doc_id, garbage, batch_pages=positive(batch_pages), **about)
        else:
            return row, False
        return conn.execute(by_id(doc_id)).mappings().one(), True

    def _new_run(self, conn: sa.Connection, doc_id: str, garbage: Garbage, state: str = "queued",
                 **values: Any) -> None:
        """Drop a document's output and start a new run in `state`: a task of the old run then does nothing."""
        self._clear_content(conn, doc_id, garbage)
        conn.execute(sa.update(documents).where(documents.c.id == doc_id).values(
            state=state, stage=state.capitalize(), updated_at=time.time(), **_NEW_RUN, **values))

    def restart_document(self, doc_id: str) -> Document | None:
        """Drop a finished document's snippets and vectors and queue it to be extracted again."""
        return self._end_run(doc_id, restart=True)

    def cancel_document(self, doc_id: str) -> Document | None:
        """Stop an unfinished document: its output is dropped and its run ends; None if gone or finished."""
        return self._end_run(doc_id, restart=False)

    def _end_run(self, doc_id: str, restart: bool) -> Document | None:
        if not is_doc_id(doc_id):
            return None
        with self._content() as garbage, self._write("the document status", lock=CONTENT_LOCK) as conn:
            state = conn.execute(sa.select(documents.c.state).where(documents.c.id == doc_id)
                                 .with_for_update()).scalar()
            if state is None or (state in FINISHED_STATES) != restart:
                return None
            if restart:
                self._new_run(conn, doc_id, garbage, batch_pages=None)
            else:
                self._new_run(conn, doc_id, garbage, "cancelled")
        return self.get_document(doc_id)

    def get_document(self, doc_id: str) -> Document | None:
        """One document, or None."""
        if not is_doc_id(doc_id):
            return None
        row = self._first(by_id(doc_id))
        return None if row is None else row_to_document(row)

    def filter_document_ids(self, f: SearchFilter) -> set[str]:
        """Ids of the documents a filter's document conditions allow."""
        return {r["id"] for r in self._all(sa.select(documents.c.id).where(*document_conditions(f)))}

    def list_documents(self, collections: Iterable[str] | None = None) -> list[Document]:
        """All documents, newest first; only those of the named collections when some are given."""
        query = sa.select(*DOCUMENT_COLUMNS).order_by(documents.c.created_at.desc(), self._insert_order().desc())
        if collections is not None:
            query = query.where(*document_conditions(SearchFilter(collections=tuple(collections))))
        return [row_to_document(r) for r in self._all(query)]

    def unfinished_documents(self, older_than: float = 0.0) -> list[Document]:
        """Documents not ready/failed whose last update is older than older_than seconds."""
        rows = self._all(sa.select(*DOCUMENT_COLUMNS).where(
            UNFINISHED, documents.c.updated_at < time.time() - older_than).order_by(documents.c.created_at))
        return [row_to_document(r) for r in rows]

    def queued_count(self) -> int:
        """Number of documents not yet ready or failed (for backpressure)."""
        return int(self._scalar(sa.select(sa.func.count()).where(UNFINISHED)))

    def update_document(self, doc_id: str, *, generation: int | None = None, **fields: Any) -> Document | None:
        """Change status/info fields if the state change is legal (and the run is `generation`), in one
        UPDATE ... WHERE state IN (...) RETURNING; the unchanged document when refused, None if it is gone."""
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise TypeError(f"update_document() cannot set {sorted(unknown)}; allowed: {sorted(UPDATABLE)}")
        if not is_doc_id(doc_id):
            return None
        values = column_values(fields)
        values["updated_at"] = time.time()
        where = [documents.c.id == doc_id]
        if "state" in values:
            # Only from a state that may move to the new one: a late "extracting" changes nothing.
            where.append(documents.c.state.in_(states_before(values["state"])))
        if generation is not None:
            where.append(documents.c.generation == int(generation))
        with self._write("the document status") as conn:
            row = conn.execute(sa.update(documents).where(*where).values(**values)
                               .returning(*DOCUMENT_COLUMNS)).mappings().first()
            if row is None:
                row = conn.execute(by_id(doc_id)).mappings().first()
                if row is not None:
                    log.debug("document %s: refused %s (state %s, generation %s)",
                              doc_id, fields.get("state"), row["state"], row["generation"])
        return row_to_document(row) if row else None

    def fix_batch_pages(self, doc_id: str, batch_pages: int) -> int | None:
        """The document's page batch size, set to batch_pages only if none was fixed yet."""
        with self._write("the document status") as conn:
            conn.execute(sa.update(documents).where(documents.c.id == doc_id, documents.c.batch_pages.is_(None))
                         .values(batch_pages=positive(batch_pages)))
            return conn.execute(sa.select(documents.c.batch_pages).where(documents.c.id == doc_id)).scalar()

    def delete_document(self, doc_id: str) -> bool:
        """Remove a document's rows, vectors, PDF, unshared images and thumbnails."""
        if not is_doc_id(doc_id):
            return False
        with self._content() as garbage, self._write("the deletion", lock=CONTENT_LOCK) as conn:
            deleted = self._delete_rows(conn, doc_id, garbage)
        return deleted

    def _delete_rows(self, conn: sa.Connection, doc_id: str, garbage: Garbage, unless_linked: bool = False) -> bool:
        """Delete a document in the caller's transaction; False when gone (or unless_linked and in a collection)."""
        sha = conn.execute(sa.select(documents.c.sha256).where(documents.c.id == doc_id).with_for_update()).scalar()
        if sha is None:
            return False
        dc = document_collections
        if unless_linked and conn.execute(sa.select(dc.c.collection).where(dc.c.document_id == doc_id).limit(1)).first():
            return False
        garbage.pdfs.add(sha)
        garbage.documents.append(doc_id)
        self._clear_content(conn, doc_id, garbage, keep=False)
        conn.execute(sa.delete(documents).where(documents.c.id == doc_id))  # cascades to links and thumbnails
        self._drop_unused(conn, garbage)
        log.info("document %s deleted", doc_id)
        return True

    def _clear_content(self, conn: sa.Connection, doc_id: str, garbage: Garbage, keep: bool = True) -> None:
        """Delete a document's snippets, vectors and batches; their images go to garbage."""
        garbage.images |= set(conn.scalars(sa.select(snippets.c.image).distinct().where(
            snippets.c.document_id == doc_id, snippets.c.image.is_not(None))))
        removed = conn.execute(sa.delete(vectors).where(vectors.c.document_id == doc_id)).rowcount
        conn.execute(sa.delete(snippets).where(snippets.c.document_id == doc_id))
        conn.execute(sa.delete(batches).where(batches.c.document_id == doc_id))
        self._bump_vectors(conn, removed=removed)
        if keep:
            self._drop_unused(conn, garbage)
