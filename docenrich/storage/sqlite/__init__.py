"""The SQLite backend: metadata, snippets and vectors in one WAL-mode file, content files beside it."""
from __future__ import annotations

from docenrich.storage.sqlite.schema import DB_NAME, SCHEMA_VERSION, migrate
from docenrich.storage.sqlite.store import SQLiteStore

__all__ = ["DB_NAME", "SCHEMA_VERSION", "SQLiteStore", "migrate"]
