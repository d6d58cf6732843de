"""SQLite rows back into records."""
from __future__ import annotations

import sqlite3

from docenrich.records import Document, StoredSnippet
from docenrich.storage.encoding import json_load

# Columns row_to_snippet reads, for a query over `snippets s`.
SNIPPET_COLS = """s.id, s.document_id, s.ordinal, s.page, s.bbox, s.text, s.kind, s.meta, s.image,
    EXISTS (SELECT 1 FROM vectors v WHERE v.snippet_id = s.id) AS has_vector"""


def row_to_document(row: sqlite3.Row) -> Document:
    """A Document from a `documents` row."""
    htl = row["has_text_layer"]
    return Document(
        id=row["id"],
        sha256=row["sha256"],
        filename=row["filename"],
        size=row["size"],
        state=row["state"],
        stage=row["stage"],
        progress=float(row["progress"]),
        pages=row["pages"],
        title=row["title"],
        producer=row["producer"],
        has_text_layer=None if htl is None else bool(htl),
        error=row["error"],
        snippet_count=row["snippet_count"],
        batches_total=row["batches_total"],
        batches_done=row["batches_done"],
        embedder=row["embedder"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        metadata=json_load(row["metadata"], {}),
        generation=row["generation"],
        batch_pages=row["batch_pages"],
    )


def row_to_snippet(row: sqlite3.Row) -> StoredSnippet:
    """A StoredSnippet from a row selected with SNIPPET_COLS."""
    bbox = json_load(row["bbox"], None)
    return StoredSnippet(
        id=row["id"],
        document_id=row["document_id"],
        ordinal=row["ordinal"],
        page=row["page"],
        bbox=tuple(bbox) if bbox is not None else None,
        text=row["text"],
        kind=row["kind"],
        meta=json_load(row["meta"], {}),
        image_path=row["image"],
        has_vector=bool(row["has_vector"]),
    )
