"""PDFs, snippet images and page thumbnails as bytea rows, reachable from every host."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from docenrich.storage.encoding import IMAGE_NAME, check_doc_id

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)


def _thumb_key(doc_id: str, page: int, width: int | None) -> tuple[str, int, int]:
    """(document id, page, width; 0 for the default thumbnail), validated as SQLite's paths are."""
    check_doc_id(doc_id)
    page = int(page)
    if page < 1:
        raise ValueError(f"page must be >= 1, got {page}")
    if width is not None and int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    return doc_id, page, 0 if width is None else int(width)


class BlobsMixin:
    """The pdfs, images and thumbs tables."""

    def pdf_bytes(self, doc_id: str) -> bytes:
        """A document's PDF; KeyError if the document does not exist."""
        check_doc_id(doc_id)
        row = self._q(
            "SELECT p.data FROM documents d JOIN pdfs p ON p.sha256 = d.sha256 WHERE d.id = %s", (doc_id,)
        ).fetchone()
        if row is None:
            raise KeyError(doc_id)
        return bytes(row["data"])

    def image_bytes(self, name: str) -> bytes | None:
        """A stored image by content name, or None if missing or not a plain content name."""
        if not isinstance(name, str) or not IMAGE_NAME.fullmatch(name):
            return None
        row = self._q("SELECT data FROM images WHERE name = %s", (name,)).fetchone()
        return None if row is None else bytes(row["data"])

    def thumb_bytes(self, doc_id: str, page: int, width: int | None = None) -> bytes | None:
        """A cached page rendering, or None when not rendered yet."""
        row = self._q("SELECT data FROM thumbs WHERE document_id = %s AND page = %s AND width = %s",
                      _thumb_key(doc_id, page, width)).fetchone()
        return None if row is None else bytes(row["data"])

    def save_thumb(self, doc_id: str, page: int, data: bytes, width: int | None = None) -> None:
        """Cache a rendered PNG of a page (nothing happens if the document is gone)."""
        key = _thumb_key(doc_id, page, width)
        with self._write("the page thumbnail") as conn:
            conn.execute(
                """INSERT INTO thumbs (document_id, page, width, data) SELECT id, %s, %s, %s FROM documents
                   WHERE id = %s ON CONFLICT (document_id, page, width) DO UPDATE SET data = excluded.data""",
                (key[1], key[2], bytes(data), key[0]),
            )

    def _drop_unused_images(self, conn: psycopg.Connection, names: Iterable[str]) -> None:
        """Delete the images no snippet uses any more (inside a transaction holding CONTENT_LOCK)."""
        names = sorted(set(names))
        if names:
            conn.execute(
                "DELETE FROM images i WHERE i.name = ANY(%s) AND NOT EXISTS (SELECT 1 FROM snippets s WHERE s.image = i.name)",
                (names,),
            )
