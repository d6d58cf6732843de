"""Documents: uploads, status updates along the document states, listing and deletion."""
from __future__ import annotations

import hashlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from docenrich.filters import SearchFilter
from docenrich.records import FINISHED_STATES, RESTARTABLE_STATES, Document, states_before
from docenrich.storage.base import QueueFull, StorageError, default_collections, sanitize_filename
from docenrich.storage.encoding import doc_id_for, info_values, is_doc_id
from docenrich.storage.filters import document_ids_sql
from docenrich.storage.rows import UPDATABLE, column_values, positive, row_to_document
from docenrich.storage.sqlite.blobs import atomic_write, blob_present

if TYPE_CHECKING:
    from docenrich.pdf import DocumentInfo

log = logging.getLogger(__name__)

# A cancelled document: no output, and a new generation, so tasks of the cancelled run do nothing.
_CANCELLED = ("state = 'cancelled', stage = 'Cancelled', progress = 0, error = NULL, snippet_count = 0, "
              "batches_total = NULL, batches_done = 0, embedder = NULL, generation = generation + 1")

class DocumentsMixin:
    """The documents table and the PDFs its rows name."""

    def add_document(
        self, data: bytes, filename: str, info: DocumentInfo | None = None,
        collections: Iterable[str] | None = None, *,
        batch_pages: int | None = None, max_queued: int | None = None,
    ) -> tuple[Document, bool]:
        """Store an uploaded PDF in collections (default: the default one); same bytes give the same document.

        Returns (doc, created). batch_pages fixes the document's page batch size; with max_queued,
        QueueFull is raised (atomically, across processes) when that many documents are already waiting.
        """
        if not data:
            raise ValueError("The uploaded file is empty.")
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        path = self._pdf_file(sha)
        if not blob_present(path, len(data)):
            atomic_write(path, data, "the uploaded PDF")
        committed = False
        try:
            with self._write("the uploaded PDF") as conn:
                row, created, stale_images = self._upsert_document(
                    conn, sha, data, filename, info, batch_pages, max_queued
                )
                # A new document goes to the default collection unless named ones are given;
                # a known one only joins the collections named this time.
                self._link(conn, row["id"], default_collections(collections) if created else collections or [])
            committed = True
        finally:
            if not committed:
                # Only removes the file if no row uses it (e.g. it was ours, or a crash leftover).
                self._collect(pdf_shas=[sha])
        if stale_images:
            self._collect(images=stale_images)
        doc = row_to_document(row)
        log.info(
            "document %s %s (%s, %d bytes)",
            doc.id, "added" if created else "already present", doc.filename, doc.size,
        )
        return doc, created

    def _upsert_document(
        self, conn: sqlite3.Connection, sha: str, data: bytes, filename: str, info: DocumentInfo | None,
        batch_pages: int | None, max_queued: int | None,
    ) -> tuple[sqlite3.Row, bool, set[str]]:
        """Insert a new document or restart a failed one; returns (row, created, stale images)."""
        doc_id = doc_id_for(sha)
        now = time.time()
        row = conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is not None and row["sha256"] != sha:
            raise StorageError("Two different PDFs map to the same document id; cannot store this one.")
        if max_queued is not None and (row is None or row["state"] in RESTARTABLE_STATES):
            # Counted inside this write transaction (BEGIN IMMEDIATE): every process's
            # admissions are serialised by the database, so the cap holds across web processes.
            waiting = conn.execute("SELECT count(*) FROM documents WHERE state NOT IN ('ready', 'failed', 'cancelled')").fetchone()[0]
            if waiting >= max_queued:
                raise QueueFull(waiting)
        # A concurrent delete of the same bytes may have removed the file meanwhile.
        self._ensure_file(self._pdf_file(sha), data, "the uploaded PDF")
        stale_images: set[str] = set()
        if row is None:
            conn.execute(
                """INSERT INTO documents (id, sha256, filename, size, state, stage, progress, batch_pages,
                       created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', 'Queued', 0, ?, ?, ?)""",
                (doc_id, sha, sanitize_filename(filename), len(data), positive(batch_pages), now, now),
            )
            created = True
        elif row["state"] in RESTARTABLE_STATES:
            stale_images = self._restart_failed(conn, doc_id, now, batch_pages)
            created = True
        else:
            created = False
        if created and info is not None:
            self._apply_info(conn, doc_id, info)
        row = conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return row, created, stale_images

    def _restart_failed(
        self, conn: sqlite3.Connection, doc_id: str, now: float, batch_pages: int | None = None
    ) -> set[str]:
        """Queue a failed document again as a new run; returns the image names its old snippets used."""
        # A retry starts clean: partial output of the failed run is dropped.
        stale_images, removed = self._clear_content(conn, doc_id)
        if removed:
            self._bump_vectors(conn, removed=True)
        conn.execute(
            """UPDATE documents SET state = 'queued', stage = 'Queued', progress = 0,
                   error = NULL, snippet_count = 0, batches_total = NULL, batches_done = 0,
                   embedder = NULL, generation = generation + 1, batch_pages = ?, updated_at = ?
               WHERE id = ?""",
            (positive(batch_pages), now, doc_id),
        )
        return stale_images

    def restart_document(self, doc_id: str) -> Document | None:
        """Drop a finished document's snippets and vectors and queue it to be extracted again."""
        with self._write("the document status") as conn:
            row = conn.execute("SELECT state FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if row is None or row["state"] not in FINISHED_STATES:
                return None
            stale_images = self._restart_failed(conn, doc_id, time.time())
        self._collect(images=stale_images)
        return self.get_document(doc_id)

    def cancel_document(self, doc_id: str) -> Document | None:
        """Stop an unfinished document: its output so far is dropped and its run ends (a task of that
        run then does nothing); None when it is gone or already finished."""
        if not is_doc_id(doc_id):
            return None
        with self._write("the document status") as conn:
            row = conn.execute("SELECT state FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if row is None or row["state"] in FINISHED_STATES:
                return None
            stale_images, removed = self._clear_content(conn, doc_id)
            if removed:
                self._bump_vectors(conn, removed=True)
            conn.execute(f"UPDATE documents SET {_CANCELLED}, updated_at = ? WHERE id = ?", (time.time(), doc_id))
        self._collect(images=stale_images)
        return self.get_document(doc_id)

    def _apply_info(self, conn: sqlite3.Connection, doc_id: str, info: DocumentInfo) -> None:
        conn.execute(
            """UPDATE documents SET pages = ?, title = ?, producer = ?, has_text_layer = ?, metadata = ?
               WHERE id = ?""",
            (*info_values(info), doc_id),
        )

    def get_document(self, doc_id: str) -> Document | None:
        """One document, or None."""
        if not is_doc_id(doc_id):
            return None
        row = self._conn().execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return None if row is None else row_to_document(row)

    def filter_document_ids(self, f: SearchFilter) -> set[str]:
        """Ids of the documents a filter's document conditions allow."""
        sql, args = document_ids_sql(f, "?")
        return {r[0] for r in self._conn().execute(sql, args).fetchall()}

    def list_documents(self, collections: Iterable[str] | None = None) -> list[Document]:
        """All documents, newest first; only those of the named collections when some are given."""
        if collections is not None:
            return self.documents_in(collections)
        rows = self._conn().execute("SELECT * FROM documents ORDER BY created_at DESC, rowid DESC").fetchall()
        return [row_to_document(r) for r in rows]

    def unfinished_documents(self, older_than: float = 0.0) -> list[Document]:
        """Documents not ready/failed whose last update is older than older_than seconds."""
        rows = self._conn().execute(
            "SELECT * FROM documents WHERE state NOT IN ('ready', 'failed', 'cancelled') AND updated_at < ? ORDER BY created_at",
            (time.time() - older_than,),
        ).fetchall()
        return [row_to_document(r) for r in rows]

    def queued_count(self) -> int:
        """Number of documents not yet ready or failed (for backpressure)."""
        return self._conn().execute(
            "SELECT count(*) FROM documents WHERE state NOT IN ('ready', 'failed', 'cancelled')"
        ).fetchone()[0]

    def update_document(self, doc_id: str, *, generation: int | None = None, **fields: Any) -> Document | None:
        """Change status/info fields if the state change is legal (and the run is `generation`).

        A compare-and-set in one statement: returns the updated document, the unchanged one
        when the move was refused, or None if the document is gone.
        """
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise TypeError(f"update_document() cannot set {sorted(unknown)}; allowed: {sorted(UPDATABLE)}")
        if not is_doc_id(doc_id):
            return None
        values = column_values(fields)
        values["updated_at"] = time.time()
        where, args = "id = ?", [doc_id]
        if "state" in values:
            # Only from a state that may move to the new one: a late "extracting" from a task
            # that checked before the document failed (or finished) changes nothing.
            sources = states_before(values["state"])
            where += f" AND state IN ({', '.join('?' * len(sources))})"
            args += sources
        if generation is not None:
            where += " AND generation = ?"
            args.append(int(generation))
        assignments = ", ".join(f"{k} = ?" for k in values)  # keys come from UPDATABLE only
        with self._write("the document status") as conn:
            row = conn.execute(
                f"UPDATE documents SET {assignments} WHERE {where} RETURNING *", (*values.values(), *args)
            ).fetchall()
            if not row:
                row = conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchall()
                if row:
                    log.debug("document %s: refused %s (state %s, generation %s)",
                              doc_id, fields.get("state"), row[0]["state"], row[0]["generation"])
        return row_to_document(row[0]) if row else None

    def fix_batch_pages(self, doc_id: str, batch_pages: int) -> int | None:
        """The document's page batch size, set to batch_pages only if none was fixed yet."""
        with self._write("the document status") as conn:
            conn.execute(
                "UPDATE documents SET batch_pages = ? WHERE id = ? AND batch_pages IS NULL",
                (positive(batch_pages), doc_id),
            )
            row = conn.execute("SELECT batch_pages FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return None if row is None else row[0]

    def delete_document(self, doc_id: str) -> bool:
        """Remove a document's rows, vectors, PDF, unshared images and thumbnails."""
        return self._delete_document(doc_id)

    def _delete_document(self, doc_id: str) -> bool:
        if not is_doc_id(doc_id):
            return False
        with self._write("the deletion") as conn:
            gone = self._delete_rows(conn, doc_id)
        if gone is None:
            return False
        self._after_delete([doc_id], *gone)
        return True

    def _delete_rows(self, conn: sqlite3.Connection, doc_id: str, unless_linked: bool = False
                     ) -> tuple[set[str], list[str]] | None:
        """Delete a document's rows in the caller's transaction; (image names, PDF hashes) to collect
        after the commit, or None when it is gone (or, with unless_linked, still in a collection)."""
        row = conn.execute("SELECT sha256 FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            return None
        if unless_linked and conn.execute(
            "SELECT 1 FROM document_collections WHERE document_id = ? LIMIT 1", (doc_id,)
        ).fetchone():
            return None
        images, removed = self._clear_content(conn, doc_id)
        conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        if removed:
            self._bump_vectors(conn, removed=True)
        return images, [row["sha256"]]

    def _after_delete(self, doc_ids: list[str], images: set[str], pdf_shas: list[str]) -> None:
        """Remove deleted documents' files, once their rows are committed (a failed commit never loses files)."""
        self._collect(images=images, pdf_shas=pdf_shas)
        for doc_id in doc_ids:
            shutil.rmtree(self.thumb_dir / doc_id, ignore_errors=True)
            log.info("document %s deleted", doc_id)
        # Deleting is already a clean-up and happens rarely: a good moment to also remove
        # files that crashed writers left behind (written, but their row never committed).
        self._sweep_now_and_then()

    def _clear_content(self, conn: sqlite3.Connection, doc_id: str) -> tuple[set[str], int]:
        """Delete a document's snippets, vectors, batches; return (image names, vectors removed)."""
        images = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT image FROM snippets WHERE document_id = ? AND image IS NOT NULL", (doc_id,)
            )
        }
        removed = conn.execute("DELETE FROM vectors WHERE document_id = ?", (doc_id,)).rowcount
        conn.execute("DELETE FROM snippets WHERE document_id = ?", (doc_id,))
        conn.execute("DELETE FROM batches WHERE document_id = ?", (doc_id,))
        return images, removed
