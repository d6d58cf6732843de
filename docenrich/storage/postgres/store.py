"""PostgresStore: the PostgreSQL + pgvector backend, one mixin per concern over one database.

Everything lives in the database, so web processes and workers on several hosts share it:
documents, collections, snippets with their tsvector, vectors (pgvector, HNSW per dimension),
sparse postings, and the PDFs, snippet images and page thumbnails as bytea.
"""
from __future__ import annotations

import logging

from docenrich.storage.postgres.batches import BatchesMixin
from docenrich.storage.postgres.blobs import BlobsMixin
from docenrich.storage.postgres.collections import CollectionsMixin
from docenrich.storage.postgres.connections import ConnectionsMixin, open_connection
from docenrich.storage.postgres.documents import DocumentsMixin
from docenrich.storage.postgres.export import ExportMixin
from docenrich.storage.postgres.index import PgVectorIndex
from docenrich.storage.postgres.lexical import LexicalMixin
from docenrich.storage.postgres.schema import migrate
from docenrich.storage.postgres.snippets import SnippetsMixin
from docenrich.storage.postgres.vectors import VectorsMixin

log = logging.getLogger(__name__)


class PostgresStore(
    DocumentsMixin,
    CollectionsMixin,
    BatchesMixin,
    SnippetsMixin,
    VectorsMixin,
    LexicalMixin,
    ExportMixin,
    BlobsMixin,
    ConnectionsMixin,
):
    """PostgreSQL with pgvector; one connection per thread and process, reopened after a fork."""

    def __init__(self, database_url: str, *, ef_search: int = 0):
        """Connect, and bring the schema up to date (the vector extension included)."""
        self.database_url = database_url
        self.ef_search = int(ef_search)
        # The first connection knows no vector type until the migration created the extension.
        conn = open_connection(database_url, vectors=False)
        try:
            migrate(conn)
        finally:
            conn.close()
        self._init_connections()

    def vector_index(self, embedder: str) -> PgVectorIndex:
        """Dense search for one embedder, run by the database (no vectors held in this process)."""
        return PgVectorIndex(self, embedder, ef_search=self.ef_search)

    def __repr__(self) -> str:
        return f"PostgresStore({self.database_url.split('@')[-1]!r})"
