"""Export: a document's snippets with their vectors as plain rows for JSONL/parquet."""
from __future__ import annotations

import logging
from collections.abc import Iterator

from docenrich.storage.encoding import json_load
from docenrich.storage.postgres.vectors import as_array

log = logging.getLogger(__name__)

_EXPORT_CHUNK = 1000


class ExportMixin:
    """Streaming export of one document."""

    def export_rows(self, doc_id: str, embedder: str | None = None) -> Iterator[dict]:
        """Rows for JSONL/parquet export, in reading order; vectors from `embedder` (default: the doc's)."""
        doc = self.get_document(doc_id)
        if doc is None:
            return
        embedder = embedder or doc.embedder
        last = -(2**31)
        while True:
            # Keyset pages keep each read short instead of holding one snapshot for the whole export.
            rows = self._q(
                """SELECT s.id, s.ordinal, s.page, s.bbox, s.text, s.kind, s.meta, s.image, v.embedding, v.embedder
                   FROM snippets s LEFT JOIN vectors v ON v.snippet_id = s.id AND v.embedder = %s
                   WHERE s.document_id = %s AND s.ordinal > %s ORDER BY s.ordinal LIMIT %s""",
                (embedder, doc_id, last, _EXPORT_CHUNK),
            ).fetchall()
            if not rows:
                return
            for r in rows:
                yield _export_row(doc_id, r)
            last = rows[-1]["ordinal"]


def _export_row(doc_id: str, r: dict) -> dict:
    vec = r["embedding"]
    return {
        "document_id": doc_id,
        "snippet_id": r["id"],
        "ordinal": r["ordinal"],
        "page": r["page"],
        "bbox": json_load(r["bbox"], None),
        "kind": r["kind"],
        "text": r["text"],
        "meta": json_load(r["meta"], {}),
        "image": r["image"],
        "embedding": None if vec is None else as_array(vec).tolist(),
        "embedder": r["embedder"],
    }
