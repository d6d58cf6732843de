"""Database rows back into records, and status fields into column values, for every backend."""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from docenrich.records import READY, STATES, Document, StoredSnippet
from docenrich.storage.encoding import json_dump, json_load
from docenrich.storage.tables import batches, snippets

MAX_STAGE = 500
MAX_ERROR = 2000
_DOCUMENT_FIELDS = [f.name for f in dataclasses.fields(Document)]
# How update_document's fields become column values (state and embedder are taken as they are).
_CONVERT = {
    "progress": lambda v: min(1.0, max(0.0, float(v))),
    "stage": lambda v: str(v or "")[:MAX_STAGE],
    "error": lambda v: None if v is None else str(v)[:MAX_ERROR],
    "pages": int,
    "title": lambda v: str(v or ""),
    "producer": lambda v: str(v or ""),
    "has_text_layer": lambda v: None if v is None else int(bool(v)),
    "metadata": json_dump,
}
UPDATABLE = frozenset({"state", "embedder", *_CONVERT})


def row_to_document(row: Mapping[str, Any]) -> Document:
    """A Document from a `documents` row."""
    values = {name: row[name] for name in _DOCUMENT_FIELDS}
    htl = values["has_text_layer"]
    values.update(progress=float(values["progress"]), has_text_layer=None if htl is None else bool(htl),
                  metadata=json_load(values["metadata"], {}))
    return Document(**values)


def row_to_snippet(row: Mapping[str, Any]) -> StoredSnippet:
    """A StoredSnippet from a row selected with SNIPPET_COLUMNS."""
    bbox = json_load(row["bbox"], None)
    same = {name: row[name] for name in ("id", "document_id", "ordinal", "page", "text", "kind")}
    return StoredSnippet(**same, bbox=tuple(bbox) if bbox is not None else None, image_path=row["image"],
                         meta=json_load(row["meta"], {}), has_vector=bool(row["has_vector"]))


def column_values(fields: dict[str, Any]) -> dict[str, Any]:
    """update_document's fields validated and converted to column values."""
    if "state" in fields and fields["state"] not in STATES:
        raise ValueError(f"unknown state {fields['state']!r}; expected one of {STATES}")
    values = {key: _CONVERT[key](value) if key in _CONVERT else value for key, value in fields.items()}
    if fields.get("state") == READY and "progress" not in fields:
        values["progress"] = 1.0
    return values


def info_columns(info: Any) -> dict[str, Any]:
    """The columns of a DocumentInfo: pages, title, producer, text layer and metadata."""
    return column_values({"pages": getattr(info, "page_count", 0) or 0, "title": getattr(info, "title", ""),
                          "producer": getattr(info, "producer", ""),
                          "has_text_layer": getattr(info, "has_text_layer", None),
                          "metadata": getattr(info, "metadata", None)})


def positive(value: int | None) -> int | None:
    """A page batch size: a whole number of at least 1, or None."""
    return None if value is None else max(1, int(value))


def completion(conn: sa.Connection, doc_id: str, total: int) -> dict[str, Any]:
    """The columns of a document whose last page batch is in: `ready`, naming the pages given up
    (one line each) in its error column, or `failed` when every batch was given up."""
    notes = list(conn.scalars(sa.select(batches.c.note).where(
        batches.c.document_id == doc_id, batches.c.note.is_not(None)).order_by(batches.c.batch_index)))
    if total > 0 and len(notes) >= total:
        return {"progress": 1.0, "state": "failed", "stage": "failed",
                "error": f"no page could be processed: {notes[0]}"}
    return {"progress": 1.0, "state": "ready", "stage": "Ready", "error": "\n".join(notes) or None}


def text_digest(text: str) -> str:
    """A short hash of a snippet's text: what a late vector is checked against before it is saved."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def unchanged(conn: sa.Connection, items: list, digests: dict[int, str] | None) -> list:
    """The (snippet id, ...) items whose snippet exists and (with digests) has the text they came from."""
    if not items:
        return items
    ids = sorted({int(item[0]) for item in items})
    current = dict(conn.execute(sa.select(snippets.c.id, snippets.c.text).where(snippets.c.id.in_(ids))).all())
    return [item for item in items if int(item[0]) in current
            and (digests is None or digests.get(int(item[0])) == text_digest(current[int(item[0])]))]
