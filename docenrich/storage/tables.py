"""The tables, defined once for every backend (SQLAlchemy Core), and the vector column's type.

These describe the schema for the queries; the schema itself is made and changed by the
Alembic history in storage/migrations. A column marked "PostgreSQL only" exists there only.
"""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData()


class Embedding(TypeDecorator):
    """A float32 vector as numpy: little-endian bytes in a BLOB on SQLite, pgvector's `vector` on PostgreSQL."""

    impl = sa.LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect):
        """pgvector's type on PostgreSQL, a plain BLOB elsewhere."""
        if dialect.name == "postgresql":
            from pgvector.sqlalchemy import VECTOR

            return dialect.type_descriptor(VECTOR())
        return dialect.type_descriptor(sa.LargeBinary())

    def process_bind_param(self, value, dialect):
        """numpy (or float32 bytes) in, the dialect's value out."""
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = np.frombuffer(value, dtype="<f4")
        vec = np.asarray(value, dtype="<f4").reshape(-1)
        return vec if dialect.name == "postgresql" else vec.tobytes()

    def process_result_value(self, value, dialect):
        """The stored vector as a float32 numpy array."""
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return np.frombuffer(value, dtype="<f4")
        return np.asarray(value, dtype=np.float32)


def _text(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.Text, **kw)


documents = sa.Table(
    "documents", metadata,
    _text("id", primary_key=True),
    sa.Column("seq", sa.BigInteger),  # PostgreSQL only: insertion order (SQLite has its rowid)
    _text("sha256"), _text("filename"), sa.Column("size", sa.BigInteger),
    _text("state"), _text("stage"), sa.Column("progress", sa.Float), sa.Column("pages", sa.Integer),
    _text("title"), _text("producer"), sa.Column("has_text_layer", sa.Integer), _text("metadata"),
    _text("error"), sa.Column("snippet_count", sa.Integer), sa.Column("batches_total", sa.Integer),
    sa.Column("batches_done", sa.Integer), _text("embedder"),
    sa.Column("created_at", sa.Float), sa.Column("updated_at", sa.Float),
    sa.Column("generation", sa.Integer), sa.Column("batch_pages", sa.Integer),
)

snippets = sa.Table(
    "snippets", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    _text("document_id"), sa.Column("ordinal", sa.Integer), sa.Column("batch_index", sa.Integer),
    sa.Column("page", sa.Integer), _text("bbox"), _text("text"), _text("kind"), _text("meta"), _text("image"),
    sa.Column("lex", sa.Text),  # PostgreSQL only: the tsvector (SQLite's FTS5 table follows by triggers)
)

embedders = sa.Table(
    "embedders", metadata,
    _text("name", primary_key=True), sa.Column("dim", sa.Integer), sa.Column("vector_count", sa.BigInteger),
)

vectors = sa.Table(
    "vectors", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("snippet_id", sa.BigInteger), _text("document_id"), _text("embedder"), sa.Column("dim", sa.Integer),
    sa.Column("embedding", Embedding),
)

batches = sa.Table(
    "batches", metadata,
    _text("document_id", primary_key=True), sa.Column("batch_index", sa.Integer, primary_key=True),
    sa.Column("snippet_count", sa.Integer), sa.Column("done_at", sa.Float), _text("note"),
)

counters = sa.Table("counters", metadata, _text("name", primary_key=True), sa.Column("value", sa.BigInteger))

vector_removals = sa.Table(
    "vector_removals", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True), sa.Column("snippet_id", sa.BigInteger), _text("embedder"),
)

sparse_postings = sa.Table(
    "sparse_postings", metadata,
    _text("embedder", primary_key=True), sa.Column("token", sa.Integer, primary_key=True),
    sa.Column("snippet_id", sa.BigInteger, primary_key=True), sa.Column("weight", sa.Float),
)

collections = sa.Table(
    "collections", metadata,
    _text("name", primary_key=True), _text("description"), sa.Column("created_at", sa.Float),
)

document_collections = sa.Table(
    "document_collections", metadata,
    _text("document_id", primary_key=True), _text("collection", primary_key=True), sa.Column("added_at", sa.Float),
)

# PostgreSQL only: the content SQLite keeps as files beside the database.
pdfs = sa.Table("pdfs", metadata, _text("sha256", primary_key=True), sa.Column("data", sa.LargeBinary))
images = sa.Table("images", metadata, _text("name", primary_key=True), sa.Column("data", sa.LargeBinary))
thumbs = sa.Table(
    "thumbs", metadata,
    _text("document_id", primary_key=True), sa.Column("page", sa.Integer, primary_key=True),
    sa.Column("width", sa.Integer, primary_key=True), sa.Column("data", sa.LargeBinary),
)

# Columns row_to_snippet reads.
SNIPPET_COLUMNS = (
    snippets.c.id, snippets.c.document_id, snippets.c.ordinal, snippets.c.page, snippets.c.bbox, snippets.c.text,
    snippets.c.kind, snippets.c.meta, snippets.c.image,
    sa.exists().where(vectors.c.snippet_id == snippets.c.id).label("has_vector"),
)
