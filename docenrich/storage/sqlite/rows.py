"""SQLite rows back into records (the converters are shared by every backend)."""
from __future__ import annotations

from docenrich.storage.rows import row_to_document, row_to_snippet

# Columns row_to_snippet reads, for a query over `snippets s`.
SNIPPET_COLS = """s.id, s.document_id, s.ordinal, s.page, s.bbox, s.text, s.kind, s.meta, s.image,
    EXISTS (SELECT 1 FROM vectors v WHERE v.snippet_id = s.id) AS has_vector"""

__all__ = ["SNIPPET_COLS", "row_to_document", "row_to_snippet"]
