"""Database rows back into records, and status fields into column values, for every backend."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from docenrich.records import READY, STATES, Document, StoredSnippet
from docenrich.storage.encoding import json_dump, json_load

MAX_STAGE = 500
MAX_ERROR = 2000
UPDATABLE = frozenset(
    {"state", "stage", "progress", "error", "pages", "title", "producer", "has_text_layer", "metadata", "embedder"}
)


def row_to_document(row: Mapping[str, Any]) -> Document:
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


def row_to_snippet(row: Mapping[str, Any]) -> StoredSnippet:
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


def column_values(fields: dict[str, Any]) -> dict[str, Any]:
    """update_document's fields validated and converted to column values."""
    values: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "state":
            if value not in STATES:
                raise ValueError(f"unknown state {value!r}; expected one of {STATES}")
            if value == READY and "progress" not in fields:
                values["progress"] = 1.0
        elif key == "progress":
            value = min(1.0, max(0.0, float(value)))
        elif key == "stage":
            value = str(value or "")[:MAX_STAGE]
        elif key == "error":
            value = None if value is None else str(value)[:MAX_ERROR]
        elif key == "pages":
            value = int(value)
        elif key in ("title", "producer"):
            value = str(value or "")
        elif key == "has_text_layer":
            value = None if value is None else int(bool(value))
        elif key == "metadata":
            value = json_dump(value)
        values[key] = value
    return values


def positive(value: int | None) -> int | None:
    """A page batch size: a whole number of at least 1, or None."""
    return None if value is None else max(1, int(value))


def completion(conn, ph: str, doc_id: str, total: int) -> dict[str, Any]:
    """The columns of a document whose last page batch is in: `ready`, naming the pages given up
    (one line each) in its error column, or `failed` when every batch was given up."""
    notes = [r["note"] for r in conn.execute(
        f"SELECT note FROM batches WHERE document_id = {ph} AND note IS NOT NULL ORDER BY batch_index", (doc_id,))]
    if total > 0 and len(notes) >= total:
        return {"progress": 1.0, "state": "failed", "stage": "failed",
                "error": f"no page could be processed: {notes[0]}"}
    return {"progress": 1.0, "state": "ready", "stage": "Ready", "error": "\n".join(notes) or None}


class GivenUpBatches:
    """fail_batch, written once for both backends (their `_write`, `_recount` and placeholder `_PH`)."""

    _PH = "?"

    def fail_batch(self, doc_id: str, batch_index: int, generation: int, note: str) -> Document | None:
        """Record a page batch as given up (done, no snippets, `note` says why); None if the document
        is gone or has moved on to another run. Idempotent: a batch already done is left as it is."""
        with self._write("a failed page batch") as conn:
            doc = insert_given_up(conn, self._PH, doc_id, batch_index, generation, note)
            row = None if doc is None else self._recount(conn, doc_id, doc["batches_total"])
        return None if row is None else row_to_document(row)


def insert_given_up(conn, ph: str, doc_id: str, batch_index: int, generation: int, note: str):
    """Inside a write transaction: mark a page batch done without snippets, `note` saying why
    (a batch already done is left as it is). The document's row, or None when it is gone, has
    moved on to another run, or has ended failed or cancelled. `ph` is the driver's placeholder."""
    doc = conn.execute(f"SELECT batches_total, state, generation FROM documents WHERE id = {ph}",
                       (doc_id,)).fetchone()
    if doc is None or doc["generation"] != int(generation) or doc["state"] in ("failed", "cancelled"):
        return None
    conn.execute(
        f"""INSERT INTO batches (document_id, batch_index, snippet_count, done_at, note)
            VALUES ({ph}, {ph}, 0, {ph}, {ph}) ON CONFLICT (document_id, batch_index) DO NOTHING""",
        (doc_id, int(batch_index), time.time(), note),
    )
    return doc


# Ordinals per snippets_around query: 6 parameters each keeps a query well under SQLite's
# oldest variable limit (999), and a search's k (at most 100) always fits in one.
ORDINALS_PER_QUERY = 100


def around_query(ph: str, cols: str, doc_id: str, ordinals: list[int], n: int) -> tuple[str, list]:
    """snippets_around's query and parameters for both backends: per ordinal, the n rows before it
    and the row at it with the n after, each an index range scan over (document_id, ordinal)."""
    parts, params = [], []
    for i, ordinal in enumerate(ordinals):
        parts.append(f"SELECT id FROM (SELECT id FROM snippets WHERE document_id = {ph} AND ordinal < {ph} "
                     f"ORDER BY ordinal DESC LIMIT {ph}) b{i}")
        parts.append(f"SELECT id FROM (SELECT id FROM snippets WHERE document_id = {ph} AND ordinal >= {ph} "
                     f"ORDER BY ordinal LIMIT {ph}) a{i}")
        params += [doc_id, int(ordinal), int(n), doc_id, int(ordinal), int(n) + 1]
    sql = f"SELECT {cols} FROM snippets s WHERE s.id IN ({' UNION ALL '.join(parts)}) ORDER BY s.ordinal"
    return sql, params


def around_rows(fetch, ph: str, cols: str, doc_id: str, ordinals, n: int) -> list:
    """snippets_around's rows, by ordinal and each once; `fetch(sql, params)` runs a query on the
    backend's connection and returns its rows (a cursor will do); `ph` is its placeholder."""
    wanted = sorted({int(o) for o in ordinals})
    found: dict[int, Any] = {}
    for i in range(0, len(wanted), ORDINALS_PER_QUERY):
        for row in fetch(*around_query(ph, cols, doc_id, wanted[i : i + ORDINALS_PER_QUERY], max(0, int(n)))):
            found[row["id"]] = row
    return sorted(found.values(), key=lambda row: row["ordinal"])


def text_digest(text: str) -> str:
    """A short hash of a snippet's text: what a late vector is checked against before it is saved."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def unchanged(conn, ph: str, items: list, digests: dict[int, str] | None) -> list:
    """The (snippet id, ...) items whose snippet still exists and, when digests are given, still
    has the text they were computed from (an id whose text changed, or a deleted one, is skipped)."""
    if not items:
        return items
    ids = sorted({int(item[0]) for item in items})
    rows = conn.execute(f"SELECT id, text FROM snippets WHERE id IN ({', '.join([ph] * len(ids))})", ids).fetchall()
    current = {int(r["id"]): r["text"] for r in rows}
    return [item for item in items if int(item[0]) in current
            and (digests is None or digests.get(int(item[0])) == text_digest(current[int(item[0])]))]
