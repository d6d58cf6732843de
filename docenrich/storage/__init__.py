"""Storage for docenrich: documents, snippets, vectors and content files behind one interface.

Only this package speaks SQL. Callers type against `Store` (the interface) and get one from
`open_store()`; `SQLiteStore` is the backend in use today.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from docenrich.storage.base import (
    DimensionMismatch,
    QueueFull,
    StorageError,
    Store,
    check_collection_name,
    sanitize_filename,
)
from docenrich.storage.index import VectorIndex
from docenrich.storage.sqlite import DB_NAME, SCHEMA_VERSION, SQLiteStore, migrate

if TYPE_CHECKING:
    from docenrich.config import Settings

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "DimensionMismatch",
    "QueueFull",
    "SQLiteStore",
    "StorageError",
    "Store",
    "VectorIndex",
    "check_collection_name",
    "migrate",
    "open_store",
    "sanitize_filename",
]


def open_store(settings: Settings | None = None, *, data_dir=None) -> Store:
    """The store the settings select: SQLite under data_dir (default settings.data_dir)."""
    if data_dir is None:
        if settings is None:
            from docenrich.config import get_settings

            settings = get_settings()
        data_dir = settings.data_dir
    # The place a second backend is chosen, once a setting names one (e.g. a database URL).
    return SQLiteStore(data_dir)
