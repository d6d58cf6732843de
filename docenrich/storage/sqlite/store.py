"""SQLiteStore: the SQLite backend, one mixin per concern over one data directory.

Layout under the data directory:

    docenrich.sqlite3           WAL-mode database (documents, collections, snippets, vectors, batches, FTS5 index)
    pdfs/<sha256>.pdf           uploaded PDFs, named by content
    images/<sha256>.<ext>       snippet images, named by content (shared between snippets)
    thumbs/<doc_id>/p<N>.png    page thumbnail cache
"""
from __future__ import annotations

from pathlib import Path

from docenrich.storage.index import VectorIndex
from docenrich.storage.sqlite.batches import BatchesMixin
from docenrich.storage.sqlite.blobs import BlobsMixin
from docenrich.storage.sqlite.collections import CollectionsMixin
from docenrich.storage.sqlite.connections import ConnectionsMixin
from docenrich.storage.sqlite.documents import DocumentsMixin
from docenrich.storage.sqlite.export import ExportMixin
from docenrich.storage.sqlite.lexical import LexicalMixin
from docenrich.storage.sqlite.schema import DB_NAME, set_up
from docenrich.storage.sqlite.snippets import SnippetsMixin
from docenrich.storage.sqlite.vectors import VectorsMixin


class SQLiteStore(
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
    """SQLite + files under one data directory; one connection per thread and process."""

    def __init__(self, data_dir: str | Path):
        """Create the directories and bring the schema up to date."""
        self._init_blobs(data_dir)
        self.db_path = self.data_dir / DB_NAME
        self._init_connections()
        set_up(self._conn(), self.db_path)

    def vector_index(self, embedder: str) -> VectorIndex:
        """Dense search for one embedder: its vectors held in this process as a numpy matrix."""
        return VectorIndex(self, embedder)
