"""SQLStore: the store written once over SQLAlchemy Core; a backend adds only what really differs
(where content lives, its lexical index, its dense search, its advisory locks)."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from docenrich.storage import engine as engines
from docenrich.storage.batches import BatchesMixin
from docenrich.storage.collections import CollectionsMixin
from docenrich.storage.documents import DocumentsMixin
from docenrich.storage.encoding import IMAGE_NAME, check_doc_id, thumb_key
from docenrich.storage.migrations import upgrade
from docenrich.storage.snippets import SnippetsMixin
from docenrich.storage.tables import documents, images, pdfs, snippets, thumbs
from docenrich.storage.vectors import VectorsMixin

if TYPE_CHECKING:
    from docenrich.storage.base import VectorSearch

log = logging.getLogger(__name__)


# What content is called in an error message, by the table PostgreSQL keeps it in.
CONTENT = {"pdfs": "the uploaded PDF", "images": "a snippet image", "thumbs": "the page thumbnail",
           "renditions": "the converted document"}


@dataclass
class Garbage:
    """Content a transaction stopped using, collected after it commits (SQLite's files)."""

    images: set[str] = field(default_factory=set)
    pdfs: set[str] = field(default_factory=set)
    documents: list[str] = field(default_factory=list)
    # Set when the content written ahead of the transaction may have ended up unused.
    check_new: bool = False


class SQLStore(DocumentsMixin, CollectionsMixin, BatchesMixin, SnippetsMixin, VectorsMixin):
    """What the service needs from storage, over one engine: the interface callers type against, as `Store`."""

    engine: sa.Engine
    # The dialect's INSERT (with on_conflict_do_nothing / on_conflict_do_update).
    _insert: Callable[[sa.Table], Any]

    def _open(self, engine: sa.Engine, failed: str) -> None:
        """Use `engine` and bring its schema up to date; StorageError (saying `failed`) when it cannot."""
        self.engine = engine
        self._insert = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert
        with self._failures(failed):
            upgrade(engine, self._create_schema)

    def close(self) -> None:
        """Close the pooled connections of this process (new ones are opened when it is used again)."""
        self.engine.dispose()

    @contextlib.contextmanager
    def _write(self, what: str = "the change", lock: int | None = None) -> Iterator[sa.Connection]:
        """One write transaction (taking the lock up front); storage errors become StorageError."""
        with self._failures(f"Could not save {what}"), self.engine.connect() as conn:
            with engines.writing(conn).begin():
                if lock is not None:
                    self._lock(conn, lock)
                yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """A read transaction: one snapshot across several SELECTs (REPEATABLE READ on PostgreSQL)."""
        with self._failures("The database could not be read"), self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _failures(self, prefix: str) -> Iterator[None]:
        try:
            yield
        except sa.exc.DBAPIError as exc:
            found = engines.failure(exc)
            if found is None:
                raise
            raise found[0](f"{prefix}: {found[1]}.") from exc

    def _all(self, stmt: sa.Executable) -> list[sa.RowMapping]:
        with self._failures("The database could not be read"), self.engine.connect() as conn:
            return list(conn.execute(stmt).mappings())

    def _first(self, stmt: sa.Executable) -> sa.RowMapping | None:
        with self._failures("The database could not be read"), self.engine.connect() as conn:
            return conn.execute(stmt).mappings().first()

    def _scalar(self, stmt: sa.Executable) -> Any:
        with self._failures("The database could not be read"), self.engine.connect() as conn:
            return conn.execute(stmt).scalar()

    # ---- what a backend supplies: the public part

    def vector_index(self, embedder: str) -> VectorSearch:
        """Dense top-k over one embedder's vectors: an in-memory matrix (SQLite) or SQL (pgvector)."""
        raise NotImplementedError

    # ---- content: PDFs, snippet images, page renderings (files beside SQLite, bytea rows in PostgreSQL)

    def pdf_bytes(self, doc_id: str) -> bytes:
        """A document's PDF; KeyError if the document (or its content) does not exist."""
        sha = self._scalar(sa.select(documents.c.sha256).where(documents.c.id == check_doc_id(doc_id)))
        data = None if sha is None else self._load(pdfs, sha)
        if data is None:
            raise KeyError(doc_id)
        return data

    def image_bytes(self, name: str) -> bytes | None:
        """A stored image by content name, or None if missing or not a plain content name."""
        if not isinstance(name, str) or not IMAGE_NAME.fullmatch(name):
            return None
        return self._load(images, name)

    def thumb_bytes(self, doc_id: str, page: int, width: int | None = None) -> bytes | None:
        """A cached page rendering (PNG), or None when not rendered yet; ValueError for a bad id or page."""
        return self._load(thumbs, *thumb_key(doc_id, page, width))

    def save_thumb(self, doc_id: str, page: int, data: bytes, width: int | None = None) -> object:
        """Cache a rendered PNG of a page (a file on SQLite, a row on PostgreSQL)."""
        return self._save(thumbs, bytes(data), *thumb_key(doc_id, page, width))

    # ---- what a backend supplies: inside the shared code

    def _load(self, table: sa.Table, *key: Any) -> bytes | None:
        """Stored content by the primary key of the table PostgreSQL keeps it in, or None."""
        raise NotImplementedError

    def _save(self, table: sa.Table, data: bytes, doc_id: str, *key: Any) -> object:
        """Keep or replace a document's own content (page rendering, rendition); not for a deleted one."""
        raise NotImplementedError

    _snippet_table: sa.Table = snippets  # PostgreSQL's has its tsvector column too

    def _create_schema(self, conn: sa.Connection) -> None:
        """Create a new database's tables, triggers and indexes."""
        raise NotImplementedError

    def _lock(self, conn: sa.Connection, key: int) -> None:
        """Take an advisory lock to the end of the transaction (nothing to do where writes are serial)."""

    def _lexical_query(self, query: str, conds: list[sa.ColumnElement]) -> sa.Select | None:
        """lexical_search's query: (id, score) rows within conds, best first; None for a query of no terms."""
        raise NotImplementedError

    def _insert_order(self) -> sa.ColumnElement:
        """The documents' insertion order, to break ties of created_at."""
        raise NotImplementedError

    def _lex(self, text: str, heading: str | None, title: str | None) -> dict[str, Any]:
        """Extra snippet column values for the lexical index (none where triggers keep it)."""
        return {}

    def _new_snippet_id(self) -> dict[str, Any]:
        """The id column value of a new snippet, when the database does not number it itself."""
        return {}

    def _new_dimension(self, conn: sa.Connection, dim: int) -> None:
        """A vector dimension was registered for the first time (PostgreSQL indexes it)."""

    def _vectors_saved(self, embedders: set[str]) -> None:
        """After a commit that stored vectors of these embedders (SQLite appends them to its vector files)."""

    @contextlib.contextmanager
    def _content(self, pdfs: dict[str, bytes] | None = None,
                 images: dict[str, bytes] | None = None) -> Iterator[Garbage]:
        """Around a write: content written ahead of it (files), and collected after it."""
        yield Garbage()

    def _put(self, conn: sa.Connection, table: sa.Table, found: dict[str, bytes]) -> None:
        """Inside the write: make sure PDFs or images (by key) are stored before a row names them."""
        raise NotImplementedError

    def _drop_unused(self, conn: sa.Connection, garbage: Garbage) -> None:
        """Inside the write: remove the stored content no row uses any more (where it is rows)."""
