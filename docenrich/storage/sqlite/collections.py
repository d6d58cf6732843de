"""Collections: named groups of documents, a document in one or more of them."""
from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator

from docenrich.records import Collection, Document
from docenrich.storage.base import check_collection_name
from docenrich.storage.sqlite.rows import row_to_document

log = logging.getLogger(__name__)

MAX_DESCRIPTION = 1000

_COUNTS = """SELECT c.name, c.description, c.created_at,
        count(dc.document_id) AS documents, coalesce(sum(d.snippet_count), 0) AS snippets
    FROM collections c
    LEFT JOIN document_collections dc ON dc.collection = c.name
    LEFT JOIN documents d ON d.id = dc.document_id"""


def _collection(row: sqlite3.Row) -> Collection:
    return Collection(row["name"], row["description"], row["created_at"], row["documents"], row["snippets"])


class CollectionsMixin:
    """The collections and document_collections tables."""

    def create_collection(self, name: str, description: str = "") -> tuple[Collection, bool]:
        """Create a collection (idempotent); returns (collection, created)."""
        name = check_collection_name(name)
        with self._write("the collection") as conn:
            created = conn.execute(
                "INSERT OR IGNORE INTO collections(name, description, created_at) VALUES (?, ?, ?)",
                (name, str(description or "")[:MAX_DESCRIPTION], time.time()),
            ).rowcount == 1
        return self.get_collection(name), created

    def get_collection(self, name: str) -> Collection | None:
        """One collection with its counts, or None."""
        row = self._conn().execute(f"{_COUNTS} WHERE c.name = ? GROUP BY c.name", (str(name),)).fetchone()
        return None if row is None else _collection(row)

    def list_collections(self) -> list[Collection]:
        """Every collection with its counts, by name."""
        rows = self._conn().execute(f"{_COUNTS} GROUP BY c.name ORDER BY c.name COLLATE NOCASE").fetchall()
        return [_collection(r) for r in rows]

    def add_to_collections(self, doc_id: str, names: Iterable[str]) -> None:
        """Put a document into collections, creating those that do not exist yet."""
        with self._write("the collection") as conn:
            self._link(conn, doc_id, names)

    def _link(self, conn: sqlite3.Connection, doc_id: str, names: Iterable[str]) -> None:
        now = time.time()
        for name in {check_collection_name(n) for n in names}:
            conn.execute("INSERT OR IGNORE INTO collections(name, created_at) VALUES (?, ?)", (name, now))
            conn.execute(
                "INSERT OR IGNORE INTO document_collections(document_id, collection, added_at) "
                "SELECT id, ?, ? FROM documents WHERE id = ?",
                (name, now, doc_id),
            )

    def remove_from_collection(self, doc_id: str, name: str) -> bool:
        """Take a document out of one collection (the document stays); False if it was not in it."""
        with self._write("the collection") as conn:
            return conn.execute(
                "DELETE FROM document_collections WHERE document_id = ? AND collection = ?", (doc_id, name)
            ).rowcount == 1

    def collections_of(self, doc_ids: Iterable[str]) -> dict[str, list[str]]:
        """The collections of each document, by document id (names sorted)."""
        ids = list(doc_ids)
        out: dict[str, list[str]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._conn().execute(
                f"SELECT document_id, collection FROM document_collections WHERE document_id IN "
                f"({','.join('?' * len(chunk))}) ORDER BY collection COLLATE NOCASE",
                chunk,
            )
            for doc_id, name in rows:
                out[doc_id].append(name)
        return out

    def collection_document_ids(self, names: Iterable[str]) -> set[str]:
        """Ids of the documents in any of the named collections."""
        names = list(dict.fromkeys(names))
        if not names:
            return set()
        rows = self._conn().execute(
            f"SELECT DISTINCT document_id FROM document_collections WHERE collection IN ({','.join('?' * len(names))})",
            names,
        )
        return {r[0] for r in rows}

    def documents_in(self, names: Iterable[str]) -> list[Document]:
        """The documents of any of the named collections, newest first."""
        names = list(dict.fromkeys(names))
        if not names:
            return []
        rows = self._conn().execute(
            f"""SELECT * FROM documents WHERE id IN (SELECT document_id FROM document_collections
                WHERE collection IN ({','.join('?' * len(names))})) ORDER BY created_at DESC, rowid DESC""",
            names,
        ).fetchall()
        return [row_to_document(r) for r in rows]

    def delete_collection(self, name: str) -> list[str] | None:
        """Delete a collection and the documents that belong to no other one; returns their ids (None: no such collection)."""
        with self._write("the deletion") as conn:
            if conn.execute("SELECT 1 FROM collections WHERE name = ?", (name,)).fetchone() is None:
                return None
            members = [r[0] for r in conn.execute(
                "SELECT document_id FROM document_collections WHERE collection = ?", (name,))]
            conn.execute("DELETE FROM collections WHERE name = ?", (name,))  # cascades to the links
            # In the same transaction: a crash leaves the collection and its documents, or neither.
            deleted, images, shas = [], set(), []
            for doc_id in members:
                gone = self._delete_rows(conn, doc_id, unless_linked=True)
                if gone is not None:
                    deleted.append(doc_id)
                    images |= gone[0]
                    shas += gone[1]
        self._after_delete(deleted, images, shas)
        log.info("collection %r deleted with %d of its %d documents", name, len(deleted), len(members))
        return deleted

    def collection_export_rows(self, name: str, embedder: str | None = None) -> Iterator[dict]:
        """Export rows of every document in a collection, document after document."""
        ids = [r[0] for r in self._conn().execute(
            "SELECT document_id FROM document_collections WHERE collection = ? ORDER BY added_at, document_id", (name,))]
        for doc_id in ids:
            yield from self.export_rows(doc_id, embedder)
