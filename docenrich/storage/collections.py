"""Collections (named groups of documents, a document in one or more) and export as plain rows."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import sqlalchemy as sa

from docenrich.filters import SearchFilter
from docenrich.records import Collection
from docenrich.storage.base import check_collection_name
from docenrich.storage.encoding import json_load
from docenrich.storage.engine import CONTENT_LOCK
from docenrich.storage.tables import collections, document_collections, documents, snippets, vectors

log = logging.getLogger(__name__)

MAX_DESCRIPTION = 1000
_EXPORT_CHUNK = 1000
_CHUNK = 500

dc = document_collections
_COUNTS = (
    sa.select(collections.c.name, collections.c.description, collections.c.created_at,
              sa.func.count(dc.c.document_id).label("documents"),
              sa.func.coalesce(sa.func.sum(documents.c.snippet_count), 0).label("snippets"))
    .select_from(collections.outerjoin(dc, dc.c.collection == collections.c.name)
                 .outerjoin(documents, documents.c.id == dc.c.document_id))
    .group_by(collections.c.name, collections.c.description, collections.c.created_at)
)


def _collection(row: sa.RowMapping) -> Collection:
    return Collection(row["name"], row["description"], row["created_at"], int(row["documents"]), int(row["snippets"]))


class CollectionsMixin:
    """The collections and document_collections tables, and the export of documents' snippets."""

    def create_collection(self, name: str, description: str = "") -> tuple[Collection, bool]:
        """Create a collection (idempotent); returns (collection, created)."""
        name = check_collection_name(name)
        with self._write("the collection") as conn:
            created = conn.execute(self._insert(collections).values(
                name=name, description=str(description or "")[:MAX_DESCRIPTION], created_at=time.time(),
            ).on_conflict_do_nothing()).rowcount == 1
        return self.get_collection(name), created

    def get_collection(self, name: str) -> Collection | None:
        """One collection with its counts, or None."""
        row = self._first(_COUNTS.where(collections.c.name == str(name)))
        return None if row is None else _collection(row)

    def list_collections(self) -> list[Collection]:
        """Every collection with its counts, by name (case-insensitively)."""
        rows = self._all(_COUNTS.order_by(sa.func.lower(collections.c.name), collections.c.name))
        return [_collection(r) for r in rows]

    def add_to_collections(self, doc_id: str, names: Iterable[str]) -> None:
        """Put a document into collections, creating those that do not exist yet."""
        with self._write("the collection") as conn:
            self._link(conn, doc_id, names)

    def _link(self, conn: sa.Connection, doc_id: str, names: Iterable[str]) -> None:
        now = time.time()
        for name in sorted({check_collection_name(n) for n in names}):
            conn.execute(self._insert(collections).values(name=name, description="", created_at=now)
                         .on_conflict_do_nothing())
            conn.execute(self._insert(dc).from_select(
                ["document_id", "collection", "added_at"],
                sa.select(documents.c.id, sa.literal(name), sa.literal(now)).where(documents.c.id == doc_id),
            ).on_conflict_do_nothing())

    def remove_from_collection(self, doc_id: str, name: str) -> bool:
        """Take a document out of one collection (the document stays); False if it was not in it."""
        with self._write("the collection") as conn:
            return conn.execute(sa.delete(dc).where(dc.c.document_id == doc_id, dc.c.collection == name)).rowcount == 1

    def collections_of(self, doc_ids: Iterable[str]) -> dict[str, list[str]]:
        """The collections of each document, by document id (names sorted)."""
        ids = list(doc_ids)
        out: dict[str, list[str]] = {i: [] for i in ids}
        for start in range(0, len(ids), _CHUNK):
            for r in self._all(sa.select(dc.c.document_id, dc.c.collection).where(
                    dc.c.document_id.in_(ids[start:start + _CHUNK])).order_by(
                    sa.func.lower(dc.c.collection), dc.c.collection)):
                out[r["document_id"]].append(r["collection"])
        return out

    def collection_document_ids(self, names: Iterable[str]) -> set[str]:
        """Ids of the documents in any of the named collections."""
        return self.filter_document_ids(SearchFilter(collections=tuple(names)))

    def delete_collection(self, name: str) -> list[str] | None:
        """Delete a collection and the documents that belong to no other one; their ids (None: unknown)."""
        with self._content() as garbage, self._write("the deletion", lock=CONTENT_LOCK) as conn:
            if conn.execute(sa.select(collections.c.name).where(collections.c.name == name)).first() is None:
                return None
            members = list(conn.scalars(sa.select(dc.c.document_id).where(dc.c.collection == name)))
            conn.execute(sa.delete(collections).where(collections.c.name == name))  # cascades to the links
            # In the same transaction: a crash leaves the collection and its documents, or neither.
            deleted = [d for d in members if self._delete_rows(conn, d, garbage, unless_linked=True)]
        log.info("collection %r deleted with %d of its %d documents", name, len(deleted), len(members))
        return deleted

    def collection_export_rows(self, name: str, embedder: str | None = None) -> Iterator[dict]:
        """Export rows of every document in a collection, document after document."""
        ids = [r["document_id"] for r in self._all(sa.select(dc.c.document_id).where(dc.c.collection == name)
                                                   .order_by(dc.c.added_at, dc.c.document_id))]
        for doc_id in ids:
            yield from self.export_rows(doc_id, embedder)

    def export_rows(self, doc_id: str, embedder: str | None = None) -> Iterator[dict]:
        """Rows for JSONL/parquet export, in reading order; vectors from `embedder` (default: the doc's)."""
        doc = self.get_document(doc_id)
        if doc is None:
            return
        s, v = snippets, vectors
        query = (sa.select(s.c.id, s.c.ordinal, s.c.page, s.c.bbox, s.c.text, s.c.kind, s.c.meta, s.c.image,
                           v.c.embedding, v.c.embedder)
                 .select_from(s.outerjoin(v, (v.c.snippet_id == s.c.id) & (v.c.embedder == (embedder or doc.embedder))))
                 .where(s.c.document_id == doc_id).order_by(s.c.ordinal).limit(_EXPORT_CHUNK))
        last = -(2**31)
        # Keyset pages keep each read short instead of holding one snapshot for the whole export.
        while rows := self._all(query.where(s.c.ordinal > last)):
            for r in rows:
                yield {"document_id": doc_id, "snippet_id": r["id"], "ordinal": r["ordinal"], "page": r["page"],
                       "bbox": json_load(r["bbox"], None), "kind": r["kind"], "text": r["text"],
                       "meta": json_load(r["meta"], {}), "image": r["image"],
                       "embedding": None if r["embedding"] is None else r["embedding"].tolist(),
                       "embedder": r["embedder"]}
            last = rows[-1]["ordinal"]
