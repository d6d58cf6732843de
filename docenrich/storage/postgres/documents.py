"""Documents: uploads under the admission cap, compare-and-set status updates, deletion."""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from docenrich.filters import SearchFilter
from docenrich.records import FINISHED_STATES, RESTARTABLE_STATES, Document, states_before
from docenrich.storage.base import QueueFull, StorageError, default_collections, sanitize_filename
from docenrich.storage.encoding import doc_id_for, info_values, is_doc_id
from docenrich.storage.filters import document_ids_sql
from docenrich.storage.postgres.schema import ADMISSION_LOCK, CONTENT_LOCK
from docenrich.storage.rows import UPDATABLE, column_values, positive, row_to_document

if TYPE_CHECKING:
    import psycopg

    from docenrich.pdf import DocumentInfo

log = logging.getLogger(__name__)

# A cancelled document: no output, and a new generation, so tasks of the cancelled run do nothing.
_CANCELLED = ("state = 'cancelled', stage = 'Cancelled', progress = 0, error = NULL, snippet_count = 0, "
              "batches_total = NULL, batches_done = 0, embedder = NULL, generation = generation + 1")

_WAITING = "SELECT count(*) AS n FROM documents WHERE state NOT IN ('ready', 'failed', 'cancelled')"


class DocumentsMixin:
    """The documents table and the PDFs (bytea) its rows name."""

    def add_document(
        self, data: bytes, filename: str, info: DocumentInfo | None = None,
        collections: Iterable[str] | None = None, *,
        batch_pages: int | None = None, max_queued: int | None = None,
    ) -> tuple[Document, bool]:
        """Store an uploaded PDF in collections (default: the default one); same bytes give the same document.

        Returns (doc, created). With max_queued, QueueFull is raised when that many documents are
        already waiting: decided under one advisory lock, so it holds across processes and hosts.
        """
        if not data:
            raise ValueError("The uploaded file is empty.")
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        # The admission lock serialises every upload; the content lock keeps a concurrent
        # deletion from removing the PDF row between our check and our insert.
        with self._write("the uploaded PDF", lock=ADMISSION_LOCK) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CONTENT_LOCK,))
            row, created = self._upsert_document(conn, sha, data, filename, info, batch_pages, max_queued)
            self._link(conn, row["id"], default_collections(collections) if created else collections or [])
        doc = row_to_document(row)
        log.info("document %s %s (%s, %d bytes)", doc.id, "added" if created else "already present",
                 doc.filename, doc.size)
        return doc, created

    def _upsert_document(
        self, conn: psycopg.Connection, sha: str, data: bytes, filename: str, info: DocumentInfo | None,
        batch_pages: int | None, max_queued: int | None,
    ) -> tuple[dict, bool]:
        """Insert a new document or restart a failed one; returns (row, created)."""
        doc_id = doc_id_for(sha)
        now = time.time()
        row = conn.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()
        if row is not None and row["sha256"] != sha:
            raise StorageError("Two different PDFs map to the same document id; cannot store this one.")
        if max_queued is not None and (row is None or row["state"] in RESTARTABLE_STATES):
            # Counted while holding ADMISSION_LOCK: read committed gives this statement a snapshot
            # taken after the previous holder committed, so no two admissions see the same count.
            waiting = conn.execute(_WAITING).fetchone()["n"]
            if waiting >= max_queued:
                raise QueueFull(waiting)
        conn.execute("INSERT INTO pdfs(sha256, data) VALUES (%s, %s) ON CONFLICT (sha256) DO NOTHING", (sha, data))
        created = True
        if row is None:
            conn.execute(
                """INSERT INTO documents (id, sha256, filename, size, state, stage, progress, batch_pages,
                       created_at, updated_at) VALUES (%s, %s, %s, %s, 'queued', 'Queued', 0, %s, %s, %s)""",
                (doc_id, sha, sanitize_filename(filename), len(data), positive(batch_pages), now, now),
            )
        elif row["state"] in RESTARTABLE_STATES:
            self._restart_failed(conn, doc_id, now, batch_pages)
        else:
            created = False
        if created and info is not None:
            self._apply_info(conn, doc_id, info)
        return conn.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone(), created

    def _restart_failed(
        self, conn: psycopg.Connection, doc_id: str, now: float, batch_pages: int | None = None
    ) -> None:
        """Queue a failed (or finished) document again as a new run, dropping the old run's output."""
        if self._clear_content(conn, doc_id):
            self._bump_vectors(conn, removed=True)
        conn.execute(
            """UPDATE documents SET state = 'queued', stage = 'Queued', progress = 0,
                   error = NULL, snippet_count = 0, batches_total = NULL, batches_done = 0,
                   embedder = NULL, generation = generation + 1, batch_pages = %s, updated_at = %s
               WHERE id = %s""",
            (positive(batch_pages), now, doc_id),
        )

    def restart_document(self, doc_id: str) -> Document | None:
        """Drop a finished document's snippets and vectors and queue it to be extracted again."""
        if not is_doc_id(doc_id):
            return None
        with self._write("the document status", lock=CONTENT_LOCK) as conn:
            row = conn.execute("SELECT state FROM documents WHERE id = %s FOR UPDATE", (doc_id,)).fetchone()
            if row is None or row["state"] not in FINISHED_STATES:
                return None
            self._restart_failed(conn, doc_id, time.time())
        return self.get_document(doc_id)

    def cancel_document(self, doc_id: str) -> Document | None:
        """Stop an unfinished document: its output so far is dropped and its run ends (a task of that
        run then does nothing); None when it is gone or already finished."""
        if not is_doc_id(doc_id):
            return None
        with self._write("the document status", lock=CONTENT_LOCK) as conn:
            row = conn.execute("SELECT state FROM documents WHERE id = %s FOR UPDATE", (doc_id,)).fetchone()
            if row is None or row["state"] in FINISHED_STATES:
                return None
            if self._clear_content(conn, doc_id):
                self._bump_vectors(conn, removed=True)
            conn.execute(f"UPDATE documents SET {_CANCELLED}, updated_at = %s WHERE id = %s", (time.time(), doc_id))
        return self.get_document(doc_id)

    def _apply_info(self, conn: psycopg.Connection, doc_id: str, info: DocumentInfo) -> None:
        conn.execute(
            """UPDATE documents SET pages = %s, title = %s, producer = %s, has_text_layer = %s, metadata = %s
               WHERE id = %s""",
            (*info_values(info), doc_id),
        )

    def get_document(self, doc_id: str) -> Document | None:
        """One document, or None."""
        if not is_doc_id(doc_id):
            return None
        row = self._q("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()
        return None if row is None else row_to_document(row)

    def filter_document_ids(self, f: SearchFilter) -> set[str]:
        """Ids of the documents a filter's document conditions allow."""
        sql, args = document_ids_sql(f, "%s")
        return {r["id"] for r in self._q(sql, args).fetchall()}

    def list_documents(self, collections: Iterable[str] | None = None) -> list[Document]:
        """All documents, newest first; only those of the named collections when some are given."""
        if collections is not None:
            return self.documents_in(collections)
        rows = self._q("SELECT * FROM documents ORDER BY created_at DESC, seq DESC").fetchall()
        return [row_to_document(r) for r in rows]

    def unfinished_documents(self, older_than: float = 0.0) -> list[Document]:
        """Documents not ready/failed whose last update is older than older_than seconds."""
        rows = self._q(
            "SELECT * FROM documents WHERE state NOT IN ('ready', 'failed', 'cancelled') AND updated_at < %s ORDER BY created_at",
            (time.time() - older_than,),
        ).fetchall()
        return [row_to_document(r) for r in rows]

    def queued_count(self) -> int:
        """Number of documents not yet ready or failed (for backpressure)."""
        return int(self._q(_WAITING).fetchone()["n"])

    def update_document(self, doc_id: str, *, generation: int | None = None, **fields: Any) -> Document | None:
        """Change status/info fields if the state change is legal (and the run is `generation`).

        A compare-and-set in one UPDATE ... WHERE state IN (...): returns the updated document,
        the unchanged one when the move was refused, or None if the document is gone.
        """
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise TypeError(f"update_document() cannot set {sorted(unknown)}; allowed: {sorted(UPDATABLE)}")
        if not is_doc_id(doc_id):
            return None
        values = column_values(fields)
        values["updated_at"] = time.time()
        where, args = "id = %s", [doc_id]
        if "state" in values:
            # Only from a state that may move to the new one: a late "extracting" changes nothing.
            where += " AND state = ANY(%s)"
            args.append(list(states_before(values["state"])))
        if generation is not None:
            where += " AND generation = %s"
            args.append(int(generation))
        assignments = ", ".join(f"{k} = %s" for k in values)  # keys come from UPDATABLE only
        with self._write("the document status") as conn:
            row = conn.execute(
                f"UPDATE documents SET {assignments} WHERE {where} RETURNING *", (*values.values(), *args)
            ).fetchone()
            if row is None:
                row = conn.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()
                if row is not None:
                    log.debug("document %s: refused %s (state %s, generation %s)",
                              doc_id, fields.get("state"), row["state"], row["generation"])
        return row_to_document(row) if row else None

    def fix_batch_pages(self, doc_id: str, batch_pages: int) -> int | None:
        """The document's page batch size, set to batch_pages only if none was fixed yet."""
        with self._write("the document status") as conn:
            conn.execute("UPDATE documents SET batch_pages = %s WHERE id = %s AND batch_pages IS NULL",
                         (positive(batch_pages), doc_id))
            row = conn.execute("SELECT batch_pages FROM documents WHERE id = %s", (doc_id,)).fetchone()
        return None if row is None else row["batch_pages"]

    def delete_document(self, doc_id: str) -> bool:
        """Remove a document's rows, vectors, PDF, unshared images and thumbnails."""
        return self._delete_document(doc_id)

    def _delete_document(self, doc_id: str) -> bool:
        if not is_doc_id(doc_id):
            return False
        with self._write("the deletion", lock=CONTENT_LOCK) as conn:
            deleted = self._delete_rows(conn, doc_id)
        if deleted:
            log.info("document %s deleted", doc_id)
        return deleted

    def _delete_rows(self, conn: psycopg.Connection, doc_id: str, unless_linked: bool = False) -> bool:
        """Delete a document with its PDF and thumbnails in the caller's transaction; False when it is
        gone (or, with unless_linked, still in a collection)."""
        row = conn.execute("SELECT sha256 FROM documents WHERE id = %s FOR UPDATE", (doc_id,)).fetchone()
        if row is None:
            return False
        if unless_linked and conn.execute(
            "SELECT 1 FROM document_collections WHERE document_id = %s LIMIT 1", (doc_id,)
        ).fetchone():
            return False
        if self._clear_content(conn, doc_id):
            self._bump_vectors(conn, removed=True)
        conn.execute("DELETE FROM documents WHERE id = %s", (doc_id,))  # cascades to thumbs
        conn.execute("DELETE FROM pdfs WHERE sha256 = %s", (row["sha256"],))
        return True

    def _clear_content(self, conn: psycopg.Connection, doc_id: str) -> int:
        """Delete a document's snippets, vectors, batches and now unused images; returns vectors removed."""
        images = [r["image"] for r in conn.execute(
            "SELECT DISTINCT image FROM snippets WHERE document_id = %s AND image IS NOT NULL", (doc_id,))]
        removed = conn.execute("DELETE FROM vectors WHERE document_id = %s", (doc_id,)).rowcount
        conn.execute("DELETE FROM snippets WHERE document_id = %s", (doc_id,))
        conn.execute("DELETE FROM batches WHERE document_id = %s", (doc_id,))
        self._drop_unused_images(conn, images)
        return removed
