"""Reading stored snippets: for the API and pages, and as Snippets still to be embedded."""
from __future__ import annotations

import logging
from collections.abc import Iterable

from docenrich.records import Snippet, StoredSnippet
from docenrich.storage.encoding import image_name, json_load
from docenrich.storage.postgres.rows import SNIPPET_COLS, row_to_snippet
from docenrich.storage.postgres.schema import CONTENT_LOCK
from docenrich.storage.rows import around_rows

log = logging.getLogger(__name__)


class SnippetsMixin:
    """Queries over the snippets table."""

    def snippets(
        self, doc_id: str, *, limit: int | None = None, offset: int = 0, page: int | None = None
    ) -> list[StoredSnippet]:
        """A document's snippets in reading order (by ordinal), optionally of one page only."""
        on_page = "" if page is None else " AND s.page = %s"
        params = (doc_id,) if page is None else (doc_id, int(page))
        rows = self._q(
            f"SELECT {SNIPPET_COLS} FROM snippets s WHERE s.document_id = %s{on_page} ORDER BY s.ordinal "
            "LIMIT %s OFFSET %s",
            (*params, None if limit is None else int(limit), int(offset)),
        ).fetchall()
        return [row_to_snippet(r) for r in rows]

    def snippets_without_image(self, doc_id: str, limit: int = 500, *, after_ordinal: int = -1) -> list[StoredSnippet]:
        """A document's snippets whose region image is not rendered yet, in reading order after an ordinal."""
        rows = self._q(
            f"SELECT {SNIPPET_COLS} FROM snippets s WHERE s.document_id = %s AND s.image IS NULL AND s.ordinal > %s "
            "ORDER BY s.ordinal LIMIT %s", (doc_id, int(after_ordinal), int(limit)),
        ).fetchall()
        return [row_to_snippet(r) for r in rows]

    def set_snippet_images(self, images: list[tuple[int, bytes, str]]) -> int:
        """Store rendered (snippet id, bytes, format) region images where a snippet has none yet."""
        named = [(int(sid), image_name(data, fmt, f"snippet {sid}"), bytes(data)) for sid, data, fmt in images]
        if not named:
            return 0
        done = 0
        # CONTENT_LOCK: an image row is never dropped while a snippet starts using it.
        with self._write("the snippet images", lock=CONTENT_LOCK) as conn:
            for sid, name, data in named:
                if conn.execute("UPDATE snippets SET image = %s WHERE id = %s AND image IS NULL", (name, sid)).rowcount:
                    conn.execute("INSERT INTO images(name, data) VALUES (%s, %s) ON CONFLICT DO NOTHING", (name, data))
                    done += 1
        return done

    def snippets_around(self, doc_id: str, ordinals: Iterable[int], n: int) -> list[StoredSnippet]:
        """A document's snippets at the given ordinals and up to n either side of each, by ordinal."""
        return [row_to_snippet(r) for r in around_rows(self._q, "%s", SNIPPET_COLS, doc_id, ordinals, n)]

    def get_snippet(self, snippet_id: int) -> StoredSnippet | None:
        """One snippet by id, or None."""
        row = self._q(f"SELECT {SNIPPET_COLS} FROM snippets s WHERE s.id = %s", (int(snippet_id),)).fetchone()
        return None if row is None else row_to_snippet(row)

    def get_snippets(self, snippet_ids: Iterable[int]) -> list[StoredSnippet]:
        """Several snippets by id, in the order given; missing ids are skipped."""
        ids = [int(i) for i in snippet_ids]
        if not ids:
            return []
        rows = self._q(f"SELECT {SNIPPET_COLS} FROM snippets s WHERE s.id = ANY(%s)", (ids,))
        found = {r["id"]: row_to_snippet(r) for r in rows}
        return [found[i] for i in ids if i in found]

    def snippets_needing_vectors(self, embedder: str, limit: int, *, after_id: int = 0) -> list[Snippet]:
        """Snippets without a vector from `embedder` (id > after_id); meta carries snippet_id and image."""
        rows = self._q(
            """SELECT s.id, s.document_id, s.ordinal, s.page, s.bbox, s.text, s.kind, s.meta, s.image
               FROM snippets s
               WHERE s.id > %s AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.snippet_id = s.id AND v.embedder = %s)
               ORDER BY s.id LIMIT %s""",
            (int(after_id), embedder, int(limit)),
        ).fetchall()
        return [_row_to_pending(r) for r in rows]


def _row_to_pending(row: dict) -> Snippet:
    """A Snippet to embed, carrying its stored id (and image name) in meta."""
    bbox = json_load(row["bbox"], None)
    meta = json_load(row["meta"], {})
    meta["snippet_id"] = row["id"]
    if row["image"]:
        meta["image"] = row["image"]
    return Snippet(text=row["text"], page=row["page"], bbox=tuple(bbox) if bbox is not None else None,
                   document_id=row["document_id"], ordinal=row["ordinal"], kind=row["kind"], meta=meta)
