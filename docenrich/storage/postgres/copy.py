"""Copying a SQLite store into PostgreSQL: document by document, each in one transaction.

A document already in the target is skipped, so an interrupted copy is simply run again; a
document is never half-copied because its rows, files and vectors commit together. Snippet ids
are kept, so hits, links and exports name the same snippets after the move.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import TSVECTOR

from docenrich.storage.documents import by_id
from docenrich.storage.encoding import json_load
from docenrich.storage.engine import CONTENT_LOCK
from docenrich.storage.postgres.index import hnsw_index_sql
from docenrich.storage.postgres.store import PG_SNIPPETS, lex_vector
from docenrich.storage.tables import (
    batches,
    collections,
    document_collections,
    documents,
    embedders,
    images,
    pdfs,
    renditions,
    snippets,
    sparse_postings,
    thumbs,
    vectors,
)

if TYPE_CHECKING:
    from docenrich.storage.postgres.store import PostgresStore
    from docenrich.storage.sqlite.store import SQLiteStore

log = logging.getLogger(__name__)

_THUMB = re.compile(r"p(\d{5})(?:-w(\d+))?\.png")


def pending_documents(source: SQLiteStore, target: PostgresStore) -> tuple[list[str], int]:
    """(ids of the source's documents not in the target yet, oldest first; how many are there already)."""
    ids = [r["id"] for r in source._all(sa.select(documents.c.id).order_by(
        documents.c.created_at, source._insert_order()))]
    present = {r["id"] for r in target._all(sa.select(documents.c.id).where(documents.c.id.in_(ids)))}
    return [i for i in ids if i not in present], len(present)


def copy_collections(source: SQLiteStore, target: PostgresStore) -> int:
    """Create the source's collections (with their descriptions) in the target; returns how many."""
    rows = [dict(r) for r in source._all(sa.select(collections))]
    with target._write("the collections") as conn:
        for r in rows:
            # A collection the target made itself (its "default") takes the older date and a description.
            insert = target._insert(collections).values(**r)
            old = collections.c
            conn.execute(insert.on_conflict_do_update(index_elements=["name"], set_={
                "created_at": sa.func.least(old.created_at, insert.excluded.created_at),
                "description": sa.case((old.description == "", insert.excluded.description), else_=old.description),
            }))
    return len(rows)


def copy_document(source: SQLiteStore, target: PostgresStore, doc_id: str, *, thumbnails: bool = True) -> bool:
    """Copy one document with everything it owns, in one transaction; False if it was already there."""
    with source._read() as src:
        doc = src.execute(by_id(doc_id)).mappings().first()
        if doc is None:
            return False
        links = [dict(r) for r in src.execute(sa.select(document_collections).where(
            document_collections.c.document_id == doc_id)).mappings()]
        rows = [dict(r) for r in src.execute(
            sa.select(snippets).where(snippets.c.document_id == doc_id)).mappings()]
        vecs = [dict(r) for r in src.execute(sa.select(vectors.c.snippet_id, vectors.c.document_id,
                                                       vectors.c.embedder, vectors.c.dim, vectors.c.embedding)
                                             .where(vectors.c.document_id == doc_id).order_by(vectors.c.id)).mappings()]
        sparse = [dict(r) for r in src.execute(sa.select(sparse_postings).join(
            snippets, snippets.c.id == sparse_postings.c.snippet_id).where(snippets.c.document_id == doc_id)).mappings()]
        done = [dict(r) for r in src.execute(sa.select(batches.c.document_id, batches.c.batch_index,
                                                       batches.c.snippet_count, batches.c.done_at)
                                             .where(batches.c.document_id == doc_id)).mappings()]
    with target._write("the copied document", lock=CONTENT_LOCK) as conn:
        if conn.execute(sa.select(documents.c.id).where(documents.c.id == doc_id)).first():
            return False
        target._put(conn, pdfs, {doc["sha256"]: source.pdf_bytes(doc_id)})
        conn.execute(sa.insert(documents).values(**doc))
        for link in links:
            conn.execute(target._insert(collections).values(name=link["collection"], description="",
                                                            created_at=link["added_at"]).on_conflict_do_nothing())
            conn.execute(sa.insert(document_collections).values(**link))
        _copy_snippets(source, target, conn, rows, doc["title"])
        target._register_dims(conn, [(v["embedder"], v["dim"]) for v in vecs])
        for table, items in ((vectors, vecs), (sparse_postings, sparse), (batches, done)):
            if items:
                conn.execute(sa.insert(table), items)
        # A document of another format is drawn from its PDF rendering: never left behind.
        rendition = source._load(renditions, doc_id)
        if rendition is not None:
            conn.execute(sa.insert(renditions).values(document_id=doc_id, data=rendition))
        if thumbnails:
            _copy_thumbs(source, conn, doc_id)
        target._bump_vectors(conn, added=len(vecs))
    return True


def _copy_snippets(source: SQLiteStore, target: PostgresStore, conn: sa.Connection, rows: list[dict],
                   title: str) -> None:
    """The document's snippets under their own ids, with their images and lexical vectors."""
    for name in sorted({r["image"] for r in rows if r["image"]}):
        data = source.image_bytes(name)
        if data is not None:
            conn.execute(target._insert(images).values(name=name, data=data).on_conflict_do_nothing())
    if not rows:
        return
    for r in rows:
        r["lex_literal"] = lex_vector(r["text"], json_load(r["meta"], {}).get("heading"), title)
    conn.execute(sa.insert(PG_SNIPPETS).values(lex=sa.cast(sa.bindparam("lex_literal"), TSVECTOR)), rows)
    # Ids were given explicitly: new snippets must be numbered after them.
    conn.exec_driver_sql("SELECT setval('snippets_id_seq', greatest((SELECT max(id) FROM snippets), "
                         "(SELECT last_value FROM snippets_id_seq), 1))")


def _copy_thumbs(source: SQLiteStore, conn: sa.Connection, doc_id: str) -> None:
    folder = source.thumb_dir / doc_id
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        match = _THUMB.fullmatch(path.name)
        if match:
            conn.execute(sa.insert(thumbs).values(document_id=doc_id, page=int(match.group(1)),
                                                  width=int(match.group(2) or 0), data=path.read_bytes()))


def copy_embedders(source: SQLiteStore, target: PostgresStore) -> dict[str, int]:
    """Register the source's embedders (and so their dimensions' HNSW indexes) in the target."""
    dims = {r["name"]: r["dim"] for r in source._all(sa.select(embedders.c.name, embedders.c.dim))}
    with target._write("the embedders", lock=CONTENT_LOCK) as conn:
        target._register_dims(conn, dims.items())
    return dims


def set_vector_indexes(target: PostgresStore, dims: set[int], present: bool) -> None:
    """Drop, or build (with memory to work in), the HNSW indexes of these dimensions.

    Inserting into an HNSW index costs milliseconds per vector; building it once after a bulk
    copy is many times faster. Searches meanwhile scan exactly (slower, never wrong).
    """
    with target.engine.connect() as conn:
        if present:
            conn.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        features = target.vector_features
        for dim in sorted(d for d in dims if d <= features.max_dim):
            conn.exec_driver_sql(hnsw_index_sql(dim, half=features.halfvec) if present
                                 else f"DROP INDEX IF EXISTS vectors_hnsw_{int(dim)}")
        if present:
            conn.exec_driver_sql("RESET maintenance_work_mem")
            conn.exec_driver_sql("ANALYZE vectors")


def copy_store(source: SQLiteStore, target: PostgresStore, *, thumbnails: bool = True, limit: int | None = None,
               step: Callable[[str, bool], None] | None = None) -> dict[str, int]:
    """Copy every document not in the target yet (at most limit); step(doc_id, copied) after each one.

    When the copy brings more vectors than the target holds, the HNSW indexes are dropped first
    and built at the end (an interrupted run leaves them to the next run, which builds them).
    """
    copy_collections(source, target)
    dims = set(copy_embedders(source, target).values())
    todo, present = pending_documents(source, target)
    todo = todo[:limit]
    count = sa.select(sa.func.count()).select_from(vectors)
    incoming = sum(source._scalar(count.where(vectors.c.document_id == d)) for d in todo)
    bulk = incoming > target._scalar(count)
    if bulk:
        set_vector_indexes(target, dims, present=False)
    copied = 0
    for doc_id in todo:
        done = copy_document(source, target, doc_id, thumbnails=thumbnails)
        copied += int(done)
        if step is not None:
            step(doc_id, done)
    # Also after an earlier run that was cut short before its indexes were built.
    set_vector_indexes(target, dims, present=True)
    left = len(pending_documents(source, target)[0])
    return {"copied": copied, "skipped": present, "left": left, "bulk": int(bulk)}
