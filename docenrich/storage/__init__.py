"""Storage for docenrich: documents, snippets, vectors and content files behind one interface.

Only this package speaks SQL. Callers type against `Store` and get one from `open_store()`:
`SQLiteStore` under a data directory, or `PostgresStore` when DATABASE_URL names PostgreSQL.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from docenrich.storage.base import (
    DimensionMismatch,
    QueueFull,
    StorageError,
    VectorSearch,
    check_collection_name,
    sanitize_filename,
)
from docenrich.storage.migrations import head as schema_head
from docenrich.storage.migrations import upgrade as migrate
from docenrich.storage.sqlite import DB_NAME, SQLiteStore
from docenrich.storage.store import SQLStore as Store

if TYPE_CHECKING:
    from docenrich.config import Settings

__all__ = [
    "DB_NAME",
    "DimensionMismatch",
    "QueueFull",
    "SQLiteStore",
    "StorageError",
    "Store",
    "VectorSearch",
    "check_collection_name",
    "migrate",
    "schema_head",
    "open_store",
    "sanitize_filename",
]


def open_store(settings: Settings | None = None, *, data_dir=None, database_url: str | None = None) -> Store:
    """The store the settings select: PostgreSQL when a database URL is set, else SQLite under data_dir."""
    if settings is None and (data_dir is None or database_url is None or database_url):
        from docenrich.config import get_settings

        settings = get_settings()
    if database_url is None:
        database_url = settings.database_url
    if database_url:
        if not is_postgres_url(database_url):
            raise StorageError("DATABASE_URL must be a postgresql:// URL (leave it empty for SQLite).")
        # Imported here: SQLite users never need psycopg installed.
        from docenrich.storage.postgres import PostgresStore

        return PostgresStore(database_url, ef_search=settings.pg_hnsw_ef_search)
    return SQLiteStore(settings.data_dir if data_dir is None else data_dir)


def is_postgres_url(url: str) -> bool:
    """Whether a database URL names PostgreSQL (psycopg's schemes)."""
    return url.split(":", 1)[0] in ("postgresql", "postgres")
