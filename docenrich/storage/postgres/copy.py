"""Copying a SQLite store into PostgreSQL: document by document, each in one transaction.

A document already in the target is skipped, so an interrupted copy is simply run again; a
document is never half-copied because its rows, files and vectors commit together. Snippet ids
are kept, so hits, links and exports name the same snippets after the move.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from docenrich.storage.encoding import json_load
from docenrich.storage.postgres.lexical import lex_vector
from docenrich.storage.postgres.schema import CONTENT_LOCK, HNSW_MAX_DIM
from docenrich.storage.postgres.vectors import hnsw_index_sql

if TYPE_CHECKING:
    import psycopg

    from docenrich.storage.postgres.store import PostgresStore
    from docenrich.storage.sqlite.store import SQLiteStore

log = logging.getLogger(__name__)

_DOC_COLUMNS = ("id", "sha256", "filename", "size", "state", "stage", "progress", "pages", "title", "producer",
                "has_text_layer", "metadata", "error", "snippet_count", "batches_total", "batches_done",
                "embedder", "created_at", "updated_at", "generation", "batch_pages")
_THUMB = re.compile(r"p(\d{5})(?:-w(\d+))?\.png")


def pending_documents(source: SQLiteStore, target: PostgresStore) -> tuple[list[str], int]:
    """(ids of the source's documents not in the target yet, oldest first; how many are there already)."""
    ids = [r[0] for r in source._conn().execute("SELECT id FROM documents ORDER BY created_at, rowid")]
    present = {r["id"] for r in target._q("SELECT id FROM documents WHERE id = ANY(%s)", (ids,))}
    return [i for i in ids if i not in present], len(present)


def copy_collections(source: SQLiteStore, target: PostgresStore) -> int:
    """Create the source's collections (with their descriptions) in the target; returns how many."""
    rows = source._conn().execute("SELECT name, description, created_at FROM collections").fetchall()
    with target._write("the collections") as conn:
        for r in rows:
            # A collection the target made itself (its "default") takes the older date and a description.
            conn.execute(
                """INSERT INTO collections(name, description, created_at) VALUES (%s, %s, %s)
                   ON CONFLICT (name) DO UPDATE SET created_at = least(collections.created_at, excluded.created_at),
                   description = CASE WHEN collections.description = '' THEN excluded.description
                                      ELSE collections.description END""",
                (r["name"], r["description"], r["created_at"]))
    return len(rows)


def copy_document(source: SQLiteStore, target: PostgresStore, doc_id: str, *, thumbnails: bool = True) -> bool:
    """Copy one document with everything it owns, in one transaction; False if it was already there."""
    src = source._conn()
    doc = src.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
    if doc is None:
        return False
    with target._write("the copied document", lock=CONTENT_LOCK) as conn:
        if conn.execute("SELECT 1 FROM documents WHERE id = %s", (doc_id,)).fetchone():
            return False
        conn.execute("INSERT INTO pdfs(sha256, data) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (doc["sha256"], source.pdf_bytes(doc_id)))
        marks = ", ".join(["%s"] * len(_DOC_COLUMNS))
        conn.execute(f"INSERT INTO documents ({', '.join(_DOC_COLUMNS)}) VALUES ({marks})",
                     [doc[c] for c in _DOC_COLUMNS])
        for r in src.execute("SELECT collection, added_at FROM document_collections WHERE document_id = ?", (doc_id,)):
            conn.execute("INSERT INTO collections(name, created_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                         (r["collection"], r["added_at"]))
            conn.execute("INSERT INTO document_collections(document_id, collection, added_at) VALUES (%s, %s, %s)",
                         (doc_id, r["collection"], r["added_at"]))
        _copy_snippets(source, conn, doc_id, doc["title"])
        added = _copy_vectors(source, target, conn, doc_id)
        _copy_sparse(source, conn, doc_id)
        for r in src.execute("SELECT batch_index, snippet_count, done_at FROM batches WHERE document_id = ?", (doc_id,)):
            conn.execute("INSERT INTO batches (document_id, batch_index, snippet_count, done_at) VALUES (%s, %s, %s, %s)",
                         (doc_id, r["batch_index"], r["snippet_count"], r["done_at"]))
        if thumbnails:
            _copy_thumbs(source, conn, doc_id)
        if added:
            target._bump_vectors(conn, removed=False)
    return True


def _copy_snippets(source: SQLiteStore, conn: psycopg.Connection, doc_id: str, title: str) -> None:
    """The document's snippets under their own ids, with their images and lexical vectors."""
    rows = source._conn().execute(
        "SELECT id, ordinal, batch_index, page, bbox, text, kind, meta, image FROM snippets WHERE document_id = ?",
        (doc_id,)).fetchall()
    images = {r["image"] for r in rows if r["image"]}
    for name in sorted(images):
        data = source.image_bytes(name)
        if data is not None:
            conn.execute("INSERT INTO images(name, data) VALUES (%s, %s) ON CONFLICT DO NOTHING", (name, data))
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO snippets (id, document_id, ordinal, batch_index, page, bbox, text, kind, meta, image, lex)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::tsvector)""",
            [(r["id"], doc_id, r["ordinal"], r["batch_index"], r["page"], r["bbox"], r["text"], r["kind"], r["meta"],
              r["image"], lex_vector(r["text"], json_load(r["meta"], {}).get("heading"), title)) for r in rows],
        )
    # Ids were given explicitly: new snippets must be numbered after them.
    conn.execute("SELECT setval('snippets_id_seq', greatest((SELECT max(id) FROM snippets), "
                 "(SELECT last_value FROM snippets_id_seq), 1))")


def _source_vectors(source: SQLiteStore, doc_id: str) -> Iterator[tuple[str, int, int, bytes]]:
    yield from source._conn().execute(
        "SELECT embedder, dim, snippet_id, vector FROM vectors WHERE document_id = ? ORDER BY id", (doc_id,))


def _copy_vectors(source: SQLiteStore, target: PostgresStore, conn: psycopg.Connection, doc_id: str) -> int:
    """The document's vectors of every embedder (dimensions registered, HNSW indexes made)."""
    rows = list(_source_vectors(source, doc_id))
    dims: dict[str, set[int]] = {}
    for embedder, dim, _, _ in rows:
        dims.setdefault(embedder, set()).add(dim)
    target._register_dims(conn, dims)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO vectors (snippet_id, document_id, embedder, dim, embedding) VALUES (%s, %s, %s, %s, %s)",
            [(sid, doc_id, embedder, dim, np.frombuffer(blob, dtype="<f4")) for embedder, dim, sid, blob in rows],
        )
    return len(rows)


def _copy_sparse(source: SQLiteStore, conn: psycopg.Connection, doc_id: str) -> None:
    rows = source._conn().execute(
        """SELECT p.embedder, p.token, p.snippet_id, p.weight FROM sparse_postings p
           JOIN snippets s ON s.id = p.snippet_id WHERE s.document_id = ?""", (doc_id,)).fetchall()
    if rows:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO sparse_postings (embedder, token, snippet_id, weight) VALUES (%s, %s, %s, %s)",
                            [tuple(r) for r in rows])


def _copy_thumbs(source: SQLiteStore, conn: psycopg.Connection, doc_id: str) -> None:
    folder = source.thumb_dir / doc_id
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        match = _THUMB.fullmatch(path.name)
        if match:
            conn.execute("INSERT INTO thumbs (document_id, page, width, data) VALUES (%s, %s, %s, %s)",
                         (doc_id, int(match.group(1)), int(match.group(2) or 0), path.read_bytes()))


def copy_embedders(source: SQLiteStore, target: PostgresStore) -> dict[str, int]:
    """Register the source's embedders (and so their dimensions' HNSW indexes) in the target."""
    dims = {r["name"]: r["dim"] for r in source._conn().execute("SELECT name, dim FROM embedders")}
    with target._write("the embedders", lock=CONTENT_LOCK) as conn:
        target._register_dims(conn, {name: {dim} for name, dim in dims.items()})
    return dims


def set_vector_indexes(target: PostgresStore, dims: set[int], present: bool) -> None:
    """Drop, or build (with memory to work in), the HNSW indexes of these dimensions.

    Inserting into an HNSW index costs milliseconds per vector; building it once after a bulk
    copy is many times faster. Searches meanwhile scan exactly (slower, never wrong).
    """
    conn = target._conn()
    if present:
        conn.execute("SET maintenance_work_mem = '1GB'")
    for dim in sorted(d for d in dims if d <= HNSW_MAX_DIM):
        conn.execute(hnsw_index_sql(dim) if present else f"DROP INDEX IF EXISTS vectors_hnsw_{int(dim)}")
    if present:
        conn.execute("RESET maintenance_work_mem")
        conn.execute("ANALYZE vectors")


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
    incoming = sum(_vector_count(source, d) for d in todo)
    held = int(target._q("SELECT count(*) AS n FROM vectors").fetchone()["n"])
    bulk = incoming > held
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


def _vector_count(source: SQLiteStore, doc_id: str) -> int:
    return source._conn().execute("SELECT count(*) FROM vectors WHERE document_id = ?", (doc_id,)).fetchone()[0]
