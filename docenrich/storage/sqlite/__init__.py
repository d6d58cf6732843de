"""The SQLite backend: metadata, snippets and vectors in one WAL-mode file, content files beside it."""
from __future__ import annotations

from docenrich.storage.sqlite.store import DB_NAME, SQLiteStore

__all__ = ["DB_NAME", "SQLiteStore"]
