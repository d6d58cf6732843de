"""The storage interface every backend implements, its errors, and the helpers they share."""
from __future__ import annotations

import errno
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from docenrich.records import DEFAULT_COLLECTION

if TYPE_CHECKING:
    import numpy as np

    from docenrich.filters import SearchFilter
    from docenrich.pdf import DocumentInfo
    from docenrich.records import Collection, Document, Snippet, StoredSnippet

# Letters, digits, spaces and - _ . ; starting with a letter or digit; at most 64 characters.
NAME_PATTERN = re.compile(r"[^\W_][\w .\-]{0,63}")
MAX_FILENAME = 200
DEFAULT_FILENAME = "document.pdf"


class StorageError(RuntimeError):
    """Saving to disk or the database failed; the message is meant for a person."""


class TransientStorageError(StorageError):
    """The database was busy, locked, restarting or briefly unreachable: worth another try."""


class QueueFull(RuntimeError):
    """Admitting one more document would exceed the cap on documents waiting to be processed."""

    def __init__(self, waiting: int):
        super().__init__(f"{waiting} documents are already waiting to be processed")
        self.waiting = waiting


class DimensionMismatch(ValueError):
    """An embedder name was reused with a different vector dimension."""


class VectorSearch(Protocol):
    """What search needs of a dense index: refresh, top-k by similarity, and its size."""

    def refresh(self) -> None:
        """Catch up with the stored vectors."""
        ...

    def search(
        self, query: np.ndarray, k: int, document_id: str | None = None, document_ids: Iterable[str] | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) best first, optionally within one document or a set of them."""
        ...

    def __len__(self) -> int:
        ...


class Store(Protocol):
    """What the service needs from storage: documents, batches, snippets, vectors, export, files."""

    # ---- documents

    def add_document(
        self, data: bytes, filename: str, info: DocumentInfo | None = None,
        collections: Iterable[str] | None = None, *,
        batch_pages: int | None = None, max_queued: int | None = None,
    ) -> tuple[Document, bool]:
        """Store an uploaded PDF in collections (default: the default one); same bytes give the same document.

        Returns (doc, created). batch_pages fixes the document's page batch size; with max_queued,
        QueueFull is raised (atomically, across processes) when that many documents are already waiting.
        """
        ...

    def get_document(self, doc_id: str) -> Document | None:
        """One document, or None."""
        ...

    def filter_document_ids(self, f: SearchFilter) -> set[str]:
        """Ids of the documents a filter's document conditions allow."""
        ...

    def list_documents(self, collections: Iterable[str] | None = None) -> list[Document]:
        """All documents, newest first; only those of the named collections when some are given."""
        ...

    def update_document(self, doc_id: str, *, generation: int | None = None, **fields: Any) -> Document | None:
        """Change status/info fields if the state change is legal (and the run is `generation`).

        A compare-and-set: returns the updated document, the unchanged one when the move was
        refused, or None if the document is gone.
        """
        ...

    def fix_batch_pages(self, doc_id: str, batch_pages: int) -> int | None:
        """The document's page batch size, set to batch_pages only if none was fixed yet."""
        ...

    def delete_document(self, doc_id: str) -> bool:
        """Remove a document's rows, vectors, PDF, unshared images and thumbnails."""
        ...

    def restart_document(self, doc_id: str) -> Document | None:
        """Drop a ready or failed document's snippets and vectors and mark it queued (to re-extract)."""
        ...

    def unfinished_documents(self, older_than: float = 0.0) -> list[Document]:
        """Documents not ready/failed whose last update is older than older_than seconds."""
        ...

    def queued_count(self) -> int:
        """Number of documents not yet ready or failed (for backpressure)."""
        ...

    # ---- collections

    def create_collection(self, name: str, description: str = "") -> tuple[Collection, bool]:
        """Create a collection (idempotent); returns (collection, created). ValueError for a bad name."""
        ...

    def get_collection(self, name: str) -> Collection | None:
        """One collection with its document and snippet counts, or None."""
        ...

    def list_collections(self) -> list[Collection]:
        """Every collection with its counts, by name."""
        ...

    def add_to_collections(self, doc_id: str, names: Iterable[str]) -> None:
        """Put a document into collections, creating those that do not exist yet."""
        ...

    def remove_from_collection(self, doc_id: str, name: str) -> bool:
        """Take a document out of one collection (the document stays); False if it was not in it."""
        ...

    def collections_of(self, doc_ids: Iterable[str]) -> dict[str, list[str]]:
        """The collections of each document, by document id."""
        ...

    def collection_document_ids(self, names: Iterable[str]) -> set[str]:
        """Ids of the documents in any of the named collections."""
        ...

    def delete_collection(self, name: str) -> list[str] | None:
        """Delete a collection and its documents that belong to no other; their ids, or None if unknown."""
        ...

    def collection_export_rows(self, name: str, embedder: str | None = None) -> Iterator[dict]:
        """Export rows (as export_rows) of every document in a collection."""
        ...

    # ---- batches

    def begin_batches(self, doc_id: str, total: int) -> None:
        """Record how many batches a document has (idempotent; a different total restarts it)."""
        ...

    def cancel_document(self, doc_id: str) -> Document | None:
        """Stop an unfinished document: drop its output, end its run; None when gone or finished."""
        ...

    def fail_batch(self, doc_id: str, batch_index: int, generation: int, note: str) -> Document | None:
        """Record a page batch as given up (done, no snippets, `note` says why)."""
        ...

    def done_batches(self, doc_id: str) -> set[int]:
        """Indexes of the batches already saved for a document."""
        ...

    def save_batch(
        self, doc_id: str, batch_index: int, snippets: list[Snippet], generation: int | None = None
    ) -> Document | None:
        """Idempotently upsert one batch of snippets (+images, vectors); None if the doc is gone
        or (with generation) has moved on to another run."""
        ...

    # ---- snippets

    def snippets(
        self, doc_id: str, *, limit: int | None = None, offset: int = 0, page: int | None = None
    ) -> list[StoredSnippet]:
        """A document's snippets in reading order (by ordinal), optionally of one page only."""
        ...

    def snippets_around(self, doc_id: str, ordinals: Iterable[int], n: int) -> list[StoredSnippet]:
        """A document's snippets at the given ordinals and up to n either side of each in reading
        order, each once, by ordinal (one query for up to 100 ordinals)."""
        ...

    def get_snippet(self, snippet_id: int) -> StoredSnippet | None:
        """One snippet by id, or None."""
        ...

    def get_snippets(self, snippet_ids: Iterable[int]) -> list[StoredSnippet]:
        """Several snippets by id, in the order given; missing ids are skipped."""
        ...

    def snippets_without_image(self, doc_id: str, limit: int = 500, *, after_ordinal: int = -1) -> list[StoredSnippet]:
        """A document's snippets whose region image is not rendered yet (it is drawn lazily), in reading
        order, those after `after_ordinal`."""
        ...

    def set_snippet_images(self, images: list[tuple[int, bytes, str]]) -> int:
        """Store rendered (snippet id, encoded bytes, format) images for snippets that have none yet;
        returns how many were set. Idempotent: a snippet's first image stays."""
        ...

    def snippets_needing_vectors(
        self, embedder: str, limit: int, *, after_id: int = 0
    ) -> list[Snippet]:
        """Snippets without a vector from `embedder` (id > after_id); meta carries snippet_id."""
        ...

    # ---- vectors

    def embedder_counts(self) -> dict[str, int]:
        """Number of stored vectors per embedder name."""
        ...

    def unindexed_count(self, embedder: str) -> int:
        """Snippets without a vector from `embedder`, from maintained counts (no scan)."""
        ...

    def vector_removals(self, embedder: str, after_seq: int) -> tuple[list[int], int] | None:
        """(snippet ids whose `embedder` vector was removed after after_seq, last seq); None if
        the log no longer reaches back that far."""
        ...

    def embedder_dims(self) -> dict[str, int]:
        """Vector dimension registered for each embedder name."""
        ...

    def save_vectors(self, items: list[tuple[int, np.ndarray]], embedder: str,
                     digests: dict[int, str] | None = None) -> None:
        """Store (snippet_id, vector) pairs for `embedder`; ids of deleted snippets are skipped, and so
        are those whose text no longer has the digest (rows.text_digest) given for it."""
        ...

    def delete_vectors(self, embedder: str) -> int:
        """Drop every vector of one embedder (and its registered dimension); returns the count."""
        ...

    def vectors_version(self) -> int:
        """Counter bumped by every change to stored vectors."""
        ...

    def vectors_state(self) -> tuple[int, int]:
        """(version, epoch): version moves on any vector change, epoch only on removals."""
        ...

    def load_vectors(
        self, embedder: str, after_rowid: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(snippet ids, document ids, float32 matrix, max rowid) for rows after after_rowid."""
        ...

    # ---- lexical search

    def lexical_search(
        self, query: str, k: int, *, document_id: str | None = None, exclude_kinds: Iterable[str] = (),
        filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by a lexical ranking (BM25), best first, higher is better, among the
        snippets the filter allows (applied in the query, never to a top k).

        The index follows every snippet insert, update and delete; it covers each snippet's text
        and its context (section heading, document title). Identifiers such as R_MAKEVARS_USER,
        foo.bar() or --no-same-owner match as a unit, case- and diacritics-insensitively.
        """
        ...

    def save_sparse(self, items: list[tuple[int, dict[int, float]]], embedder: str,
                    digests: dict[int, str] | None = None) -> None:
        """Store learned sparse vectors (snippet_id, {token id: weight}) of one embedder (BGE-M3), checked
        against text digests as save_vectors."""
        ...

    def sparse_search(
        self, embedder: str, weights: dict[int, float], k: int, *, document_id: str | None = None,
        exclude_kinds: Iterable[str] = (), filter: SearchFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by the dot product of a query's sparse weights with the stored ones,
        within the filter."""
        ...

    # ---- export

    def export_rows(self, doc_id: str, embedder: str | None = None) -> Iterator[dict]:
        """Rows for JSONL/parquet export in reading order, with vectors from `embedder`."""
        ...

    # ---- files

    def pdf_bytes(self, doc_id: str) -> bytes:
        """A document's PDF; KeyError if the document does not exist."""
        ...

    def image_bytes(self, name: str) -> bytes | None:
        """A stored image by content name, or None if missing or not a plain content name."""
        ...

    def thumb_bytes(self, doc_id: str, page: int, width: int | None = None) -> bytes | None:
        """A cached page rendering (PNG), or None when not rendered yet; ValueError for a bad id or page."""
        ...

    def save_thumb(self, doc_id: str, page: int, data: bytes, width: int | None = None) -> object:
        """Cache a rendered PNG of a page (a file on SQLite, a row on PostgreSQL)."""
        ...

    # ---- dense search

    def vector_index(self, embedder: str) -> VectorSearch:
        """Dense top-k over one embedder's vectors: an in-memory matrix (SQLite) or SQL (pgvector)."""
        ...

    def close(self) -> None:
        """Release every connection this store opened in this process."""
        ...


def default_collections(names: Iterable[str] | None) -> list[str]:
    """The collections an upload goes into: those named, else the default one."""
    names = [n for n in (names or []) if n]
    return names or [DEFAULT_COLLECTION]


def check_collection_name(name: object) -> str:
    """The name, trimmed, if it is a valid collection name; ValueError saying why otherwise."""
    text = str(name or "").strip()
    if not NAME_PATTERN.fullmatch(text):
        raise ValueError(
            "A collection name has 1 to 64 characters: letters, digits, spaces, '-', '_' or '.', "
            "starting with a letter or digit."
        )
    return text


def sanitize_filename(name: Any) -> str:
    """A display-safe version of an uploaded filename (never use it as a path)."""
    text = unicodedata.normalize("NFC", str(name or ""))
    # Browsers (old IE, some clients) send full client paths; the last part is the name.
    text = re.split(r"[\\/]", text)[-1]
    # Cc: control chars; Cf: invisible format chars such as RTL overrides used to spoof
    # extensions; Cs: lone surrogates from undecodable bytes. Whitespace (tabs, newlines)
    # becomes a plain space instead so words stay apart.
    text = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs")
    )
    text = re.sub(r"\s+", " ", text).strip()
    if not text.strip("."):
        return DEFAULT_FILENAME
    if len(text) > MAX_FILENAME:
        stem, dot, ext = text.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            text = stem[: MAX_FILENAME - len(ext) - 1].rstrip() + "." + ext
        else:
            text = text[:MAX_FILENAME].rstrip()
    return text


def reason(exc: BaseException) -> str:
    """Short human wording for an OS or database error."""
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "the disk is full"
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return "the data directory is not writable"
        if exc.errno == errno.ENOTDIR:
            return "a path in the data directory is a file where a folder was expected"
        if exc.errno is not None:
            return os.strerror(exc.errno).lower()
    msg = str(exc)
    low = msg.lower()
    if "disk is full" in low:
        return "the disk is full"
    if "readonly" in low or "read-only" in low:
        return "the database is read-only"
    if "locked" in low or "busy" in low:
        return "the database stayed busy for too long (another process is writing)"
    if "disk i/o" in low:
        return "a disk I/O error occurred"
    if "unable to open" in low:
        return "the database file could not be opened"
    return msg or type(exc).__name__
