"""The tables, defined once for every backend (SQLAlchemy Core), and the vector column's type.

New databases are created from these definitions, existing ones changed by the revisions in
storage/migrations: a change here always comes with a revision that makes it.
"""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData()
# SQLite numbers rows itself only in a column declared exactly INTEGER PRIMARY KEY.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Embedding(TypeDecorator):
    """A float32 vector as numpy: little-endian bytes in a BLOB on SQLite, pgvector's `vector` on PostgreSQL."""

    impl = sa.LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            from docenrich.storage.postgres.binvec import VectorColumn

            return dialect.type_descriptor(VectorColumn())
        return dialect.type_descriptor(sa.LargeBinary())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        vec = np.asarray(value, dtype="<f4").reshape(-1)
        if dialect.name == "postgresql":
            from docenrich.storage.postgres.binvec import BinaryVector

            return BinaryVector(vec)
        return vec.tobytes()

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return np.frombuffer(value, dtype="<f4")
        return np.asarray(value, dtype=np.float32)


def _text(name: str, *args, default: str | int | None = None, kind=sa.Text, **kw) -> sa.Column:
    """A TEXT (or kind) column; NOT NULL when it has a default or is (part of) the primary key."""
    server_default = None if default is None else sa.text(f"'{default}'" if kind is sa.Text else str(default))
    return sa.Column(name, kind, *args, nullable=kw.pop("nullable", default is None and not kw.get("primary_key")),
                     server_default=server_default, **kw)


def _int(name: str, *args, kind=sa.Integer, **kw) -> sa.Column:
    """An INTEGER (or kind) column, NOT NULL as a TEXT one."""
    return _text(name, *args, kind=kind, **kw)


def _ref(column: str, cascade: bool = True) -> sa.ForeignKey:
    return sa.ForeignKey(column, ondelete="CASCADE" if cascade else None)


documents = sa.Table(
    "documents", metadata,
    _text("id", primary_key=True), _text("sha256", nullable=False, unique=True), _text("filename", nullable=False),
    _int("size", nullable=False, kind=sa.BigInteger), _text("state", default="queued"), _text("stage", default=""),
    sa.Column("progress", sa.Float, nullable=False, server_default=sa.text("0")), _int("pages", default=0),
    _text("title", default=""), _text("producer", default=""), _int("has_text_layer"), _text("metadata", default="{}"), _text("error"),
    _int("snippet_count", default=0), _int("batches_total"), _int("batches_done", default=0), _text("embedder"),
    sa.Column("created_at", sa.Float, nullable=False), sa.Column("updated_at", sa.Float, nullable=False),
    _int("generation", default=0), _int("batch_pages"),
    sa.Index("documents_state", "state", "updated_at"), sa.Index("documents_created", "created_at"),
)

snippets = sa.Table(
    "snippets", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    _text("document_id", _ref("documents.id"), nullable=False), _int("ordinal", nullable=False), _int("batch_index"),
    _int("page", nullable=False), _text("bbox"), _text("text", nullable=False), _text("kind", nullable=False),
    _text("meta", default="{}"), _text("image"),
    sa.UniqueConstraint("document_id", "ordinal"),
    sa.Index("snippets_batch", "document_id", "batch_index"),
    sa.Index("snippets_image", "image", sqlite_where=sa.text("image IS NOT NULL"),
             postgresql_where=sa.text("image IS NOT NULL")),
)

embedders = sa.Table(
    "embedders", metadata,
    _text("name", primary_key=True), _int("dim", nullable=False), _int("vector_count", default=0, kind=sa.BigInteger),
)

# AUTOINCREMENT: ids are never reused, so "id > last loaded" finds exactly the new rows.
vectors = sa.Table(
    "vectors", metadata,
    sa.Column("id", ROW_ID, primary_key=True),
    _int("snippet_id", _ref("snippets.id"), nullable=False, kind=sa.BigInteger), _text("document_id", nullable=False),
    _text("embedder", _ref("embedders.name", cascade=False), nullable=False), _int("dim", nullable=False),
    sa.Column("embedding", Embedding, nullable=False),
    sa.UniqueConstraint("snippet_id", "embedder"),
    sa.Index("vectors_embedder", "embedder", "id"), sa.Index("vectors_document", "document_id", "embedder"),
    sqlite_autoincrement=True,
)

batches = sa.Table(
    "batches", metadata,
    _text("document_id", _ref("documents.id"), primary_key=True), _int("batch_index", primary_key=True),
    _int("snippet_count", nullable=False), sa.Column("done_at", sa.Float, nullable=False), _text("note"),
)

counters = sa.Table("counters", metadata, _text("name", primary_key=True),
                    _int("value", nullable=False, kind=sa.BigInteger))

vector_removals = sa.Table(
    "vector_removals", metadata,
    sa.Column("seq", ROW_ID, primary_key=True), _int("snippet_id", nullable=False, kind=sa.BigInteger),
    _text("embedder", nullable=False), sqlite_autoincrement=True,
)

sparse_postings = sa.Table(
    "sparse_postings", metadata,
    _text("embedder", primary_key=True), _int("token", primary_key=True),
    _int("snippet_id", _ref("snippets.id"), primary_key=True, kind=sa.BigInteger),
    sa.Column("weight", sa.REAL, nullable=False),
    sa.Index("sparse_postings_snippet", "snippet_id"), sqlite_with_rowid=False,
)

collections = sa.Table(
    "collections", metadata,
    _text("name", primary_key=True), _text("description", default=""), sa.Column("created_at", sa.Float, nullable=False),
)

document_collections = sa.Table(
    "document_collections", metadata,
    _text("document_id", _ref("documents.id"), primary_key=True),
    _text("collection", _ref("collections.name"), primary_key=True), sa.Column("added_at", sa.Float, nullable=False),
    sa.Index("document_collections_collection", "collection", "document_id"),
)

# PostgreSQL only: the content SQLite keeps as files beside the database.
pdfs = sa.Table("pdfs", metadata, _text("sha256", primary_key=True),
                sa.Column("data", sa.LargeBinary, nullable=False))
images = sa.Table("images", metadata, _text("name", primary_key=True),
                  sa.Column("data", sa.LargeBinary, nullable=False))
thumbs = sa.Table(
    "thumbs", metadata,
    _text("document_id", _ref("documents.id"), primary_key=True), _int("page", primary_key=True),
    _int("width", primary_key=True), sa.Column("data", sa.LargeBinary, nullable=False),
)
# The PDF rendering of a document uploaded in another format (storage/renditions.py).
renditions = sa.Table(
    "renditions", metadata,
    _text("document_id", _ref("documents.id"), primary_key=True), sa.Column("data", sa.LargeBinary, nullable=False),
)
BLOB_TABLES = (pdfs, images, thumbs, renditions)

# Columns row_to_snippet reads.
SNIPPET_COLUMNS = (
    snippets.c.id, snippets.c.document_id, snippets.c.ordinal, snippets.c.page, snippets.c.bbox, snippets.c.text,
    snippets.c.kind, snippets.c.meta, snippets.c.image,
    sa.exists().where(vectors.c.snippet_id == snippets.c.id).label("has_vector"),
)
