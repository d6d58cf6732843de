"""The PostgreSQL + pgvector backend; psycopg is imported only when a store is opened."""
from __future__ import annotations

from docenrich.storage.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
