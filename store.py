"""Persistence for docenrich: SQLite metadata/snippets/vectors plus content-named files.

This is the only module that speaks SQL.  Layout under DATA_DIR:

    docenrich.sqlite3           WAL-mode database (documents, snippets, vectors, batches)
    pdfs/<sha256>.pdf           uploaded PDFs, named by content
    images/<sha256>.<ext>       snippet images, named by content (shared between snippets)
    thumbs/<doc_id>/p<N>.png    page thumbnail cache

Invariant that keeps files and rows consistent across processes: a file is only
unlinked while holding the database write lock and only when no row references it,
and a row referencing a file is only written under the write lock after checking
that the file exists (rewriting it if a concurrent delete removed it).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from snippets import DocumentInfo, Snippet

log = logging.getLogger(__name__)

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "STATES",
    "DimensionMismatch",
    "Document",
    "Store",
    "StorageError",
    "StoredSnippet",
    "VectorIndex",
    "migrate",
    "sanitize_filename",
]

DB_NAME = "docenrich.sqlite3"
STATES = ("queued", "extracting", "embedding", "ready", "failed")
FINISHED_STATES = ("ready", "failed")
BUSY_TIMEOUT_S = 10.0
MAX_FILENAME = 200
MAX_STAGE = 500
MAX_ERROR = 2000
DEFAULT_FILENAME = "document.pdf"
# Image formats we accept from Snippet.image_bytes(), mapped to the file extension.
IMAGE_EXTS = {"webp": "webp", "png": "png", "jpeg": "jpg", "jpg": "jpg", "gif": "gif"}
_IMAGE_NAME = re.compile(r"[0-9a-f]{64}\.(?:webp|png|jpg|gif)")
_DOC_ID = re.compile(r"[0-9a-f]{16}")
_EXPORT_CHUNK = 1000
_LOAD_CHUNK = 4096


class StorageError(RuntimeError):
    """Saving to disk or the database failed; the message is meant for a person."""


class DimensionMismatch(ValueError):
    """An embedder name was reused with a different vector dimension."""


# --------------------------------------------------------------------------- schema

# _MIGRATIONS[i] upgrades a database from user_version i to i + 1.
_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE documents (
            id TEXT PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            filename TEXT NOT NULL,
            size INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued',
            stage TEXT NOT NULL DEFAULT '',
            progress REAL NOT NULL DEFAULT 0,
            pages INTEGER NOT NULL DEFAULT 0,
            title TEXT NOT NULL DEFAULT '',
            producer TEXT NOT NULL DEFAULT '',
            has_text_layer INTEGER,
            metadata TEXT NOT NULL DEFAULT '{}',
            error TEXT,
            snippet_count INTEGER NOT NULL DEFAULT 0,
            batches_total INTEGER,
            batches_done INTEGER NOT NULL DEFAULT 0,
            embedder TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX documents_state ON documents(state, updated_at)",
        "CREATE INDEX documents_created ON documents(created_at)",
        """CREATE TABLE snippets (
            id INTEGER PRIMARY KEY,
            document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            batch_index INTEGER,
            page INTEGER NOT NULL,
            bbox TEXT,
            text TEXT NOT NULL,
            kind TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            image TEXT,
            UNIQUE (document_id, ordinal)
        )""",
        "CREATE INDEX snippets_batch ON snippets(document_id, batch_index)",
        "CREATE INDEX snippets_image ON snippets(image) WHERE image IS NOT NULL",
        """CREATE TABLE embedders (
            name TEXT PRIMARY KEY,
            dim INTEGER NOT NULL
        )""",
        # AUTOINCREMENT: ids are never reused, so "id > last loaded" finds exactly the new rows.
        """CREATE TABLE vectors (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            snippet_id INTEGER NOT NULL REFERENCES snippets(id) ON DELETE CASCADE,
            document_id TEXT NOT NULL,
            embedder TEXT NOT NULL REFERENCES embedders(name),
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            UNIQUE (snippet_id, embedder)
        )""",
        "CREATE INDEX vectors_embedder ON vectors(embedder, id)",
        "CREATE INDEX vectors_document ON vectors(document_id)",
        """CREATE TABLE batches (
            document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            batch_index INTEGER NOT NULL,
            snippet_count INTEGER NOT NULL,
            done_at REAL NOT NULL,
            PRIMARY KEY (document_id, batch_index)
        )""",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        # vectors_version: bumped by any vector change; vectors_epoch: bumped when a
        # vector is removed or replaced (an index must then reload instead of append).
        "INSERT INTO counters(name, value) VALUES ('vectors_version', 0), ('vectors_epoch', 0)",
    ],
]
SCHEMA_VERSION = len(_MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION; safe when several processes start at once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"The database was created by a newer docenrich (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); upgrade docenrich."
            )
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
            log.info("database schema migrated to version %d", step + 1)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


# --------------------------------------------------------------------------- records


@dataclass
class Document:
    """One uploaded PDF and its processing status."""

    id: str
    sha256: str
    filename: str
    size: int
    state: str
    stage: str
    progress: float
    pages: int
    title: str
    producer: str
    has_text_layer: bool | None
    error: str | None
    snippet_count: int
    batches_total: int | None
    batches_done: int
    embedder: str | None
    created_at: float
    updated_at: float
    metadata: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True once the document is ready or failed."""
        return self.state in FINISHED_STATES

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        return asdict(self)


@dataclass
class StoredSnippet:
    """A stored snippet row, for the API and the web page."""

    id: int
    document_id: str
    ordinal: int
    page: int
    bbox: tuple | None
    text: str
    kind: str
    meta: dict
    image_path: str | None
    has_vector: bool

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        d = asdict(self)
        d["bbox"] = list(self.bbox) if self.bbox is not None else None
        return d


def sanitize_filename(name: Any) -> str:
    """A display-safe version of an uploaded filename (never use it as a path)."""
    text = unicodedata.normalize("NFC", str(name or ""))
    # Browsers (old IE, some clients) send full client paths; the last part is the name.
    text = re.split(r"[\\/]", text)[-1]
    # Cc: control chars; Cf: invisible format chars such as RTL overrides used to spoof
    # extensions; Cs: lone surrogates from undecodable bytes. Whitespace (tabs, newlines)
    # becomes a plain space instead so words stay apart.
    text = "".join(
        " " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs")
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


def _reason(exc: BaseException) -> str:
    """Short human wording for an OS or SQLite error."""
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


# SQLite errors that mean "the storage is in trouble" rather than "the code is wrong".
_STORAGE_SQLITE_MARKERS = ("disk is full", "readonly", "locked", "busy", "disk i/o", "unable to open")


def _is_storage_error(exc: sqlite3.Error) -> bool:
    low = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(m in low for m in _STORAGE_SQLITE_MARKERS)


def _atomic_write(path: Path, data: bytes, what: str) -> None:
    """Write data to path via a temp file in the same dir + os.replace; StorageError on failure."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            # Without fsync a crash after the rename can leave an empty file under a
            # content name, which would then be trusted forever.
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise StorageError(f"Could not save {what}: {_reason(exc)}.") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _blob_present(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _json_default(value: Any) -> Any:
    # numpy scalars/arrays (common in meta) keep their numbers; anything else becomes text.
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else str(value)


def _json_load(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _as_vector(value: Any, what: str) -> np.ndarray:
    vec = np.asarray(value, dtype=np.float32)
    if vec.ndim == 2 and vec.shape[0] == 1:
        vec = vec[0]
    if vec.ndim != 1 or vec.shape[0] == 0:
        raise ValueError(f"{what}: expected a 1-D vector, got shape {vec.shape}")
    if not np.isfinite(vec).all():
        raise ValueError(f"{what}: vector contains NaN or infinity")
    return np.ascontiguousarray(vec, dtype="<f4")


@dataclass
class _Prepared:
    """A Snippet validated and encoded for storage."""

    ordinal: int
    page: int
    bbox: str | None
    text: str
    kind: str
    meta: str
    image_name: str | None
    image_data: bytes | None
    vector: bytes | None
    dim: int
    embedder: str | None


# --------------------------------------------------------------------------- store

# Connections inherited through fork must never be used (SQLite forbids it) nor closed
# by the child's garbage collector; parking them here keeps them alive and untouched.
_FORKED_CONNECTIONS: list[sqlite3.Connection] = []


class Store:
    """SQLite + files under one data directory; one connection per thread and process."""

    def __init__(self, data_dir: str | Path):
        """Create the directories and bring the schema up to date."""
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / DB_NAME
        self.pdf_dir = self.data_dir / "pdfs"
        self.image_dir = self.data_dir / "images"
        self.thumb_dir = self.data_dir / "thumbs"
        try:
            for d in (self.data_dir, self.pdf_dir, self.image_dir, self.thumb_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Could not create the data directory {self.data_dir}: {_reason(exc)}.") from exc
        self._local = threading.local()
        self._conns_lock = threading.Lock()
        # Every connection opened in this process, with its thread, so close() can reach
        # them all and connections of finished threads get closed (Flask's threaded server
        # starts a thread per request; without pruning each one would leak file handles).
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._conns_pid = os.getpid()
        conn = self._conn()
        try:
            # journal_mode is persistent in the file; setting it once here is enough.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("SQLite refused WAL mode (got %r); concurrent writers will block more", mode)
            migrate(conn)
        except sqlite3.Error as exc:
            raise StorageError(f"Could not open the database {self.db_path}: {_reason(exc)}.") from exc

    # ---- connections and transactions

    def _connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so that the write
            # lock is taken up front (no deadlock-prone read->write upgrade).
            conn = sqlite3.connect(
                self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StorageError(f"Could not open the database {self.db_path}: {_reason(exc)}.") from exc
        with self._conns_lock:
            if self._conns_pid != os.getpid():
                # Forked child: the parent's connections must be neither used nor closed here.
                _FORKED_CONNECTIONS.extend(c for _, c in self._conns)
                self._conns, self._conns_pid = [], os.getpid()
            alive = []
            for thread, other in self._conns:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    with contextlib.suppress(sqlite3.Error):
                        other.close()
            alive.append((threading.current_thread(), conn))
            self._conns = alive
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid != os.getpid():
            conn = None  # inherited through fork; _connect parks it
        if conn is None:
            conn = self._connect()
            local.conn = conn
            local.pid = os.getpid()
        return conn

    def close(self) -> None:
        """Close every connection this Store opened in this process."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for _, conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    @contextlib.contextmanager
    def _write(self, what: str = "the change") -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; storage-type SQLite errors become StorageError."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if _is_storage_error(exc):
                raise StorageError(f"Could not save {what}: {_reason(exc)}.") from exc
            raise
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and _is_storage_error(exc):
                raise StorageError(f"Could not save {what}: {_reason(exc)}.") from exc
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot across several SELECTs."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    # ---- paths

    @staticmethod
    def _check_doc_id(doc_id: str) -> str:
        if not isinstance(doc_id, str) or not _DOC_ID.fullmatch(doc_id):
            raise ValueError(f"not a document id: {doc_id!r}")
        return doc_id

    def _pdf_file(self, sha256: str) -> Path:
        return self.pdf_dir / f"{sha256}.pdf"

    def pdf_path(self, doc_id: str) -> Path:
        """Path of a document's PDF; KeyError if the document does not exist."""
        self._check_doc_id(doc_id)
        row = self._conn().execute("SELECT sha256 FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            raise KeyError(doc_id)
        return self._pdf_file(row["sha256"])

    def image_file(self, name: str) -> Path | None:
        """Path of a stored image by name, or None if missing or not a plain content name."""
        if not isinstance(name, str) or not _IMAGE_NAME.fullmatch(name):
            return None
        path = self.image_dir / name
        return path if path.is_file() else None

    def thumb_path(self, doc_id: str, page: int, width: int | None = None) -> Path:
        """Cache path of a page thumbnail (its folder is created; the file may not exist)."""
        self._check_doc_id(doc_id)
        page = int(page)
        if page < 1:
            raise ValueError(f"page must be >= 1, got {page}")
        suffix = ""
        if width is not None:
            if int(width) < 1:
                raise ValueError(f"width must be >= 1, got {width}")
            suffix = f"-w{int(width)}"
        folder = self.thumb_dir / doc_id
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Could not create the thumbnail folder: {_reason(exc)}.") from exc
        # The doc id is a content hash, so the name identifies the rendered page for good.
        return folder / f"p{page:05d}{suffix}.png"

    def save_thumb(self, doc_id: str, page: int, data: bytes, width: int | None = None) -> Path:
        """Atomically write a rendered PNG thumbnail to its cache path."""
        path = self.thumb_path(doc_id, page, width)
        _atomic_write(path, data, "the page thumbnail")
        return path

    # ---- documents

    def _row_to_document(self, row: sqlite3.Row) -> Document:
        htl = row["has_text_layer"]
        return Document(
            id=row["id"],
            sha256=row["sha256"],
            filename=row["filename"],
            size=row["size"],
            state=row["state"],
            stage=row["stage"],
            progress=float(row["progress"]),
            pages=row["pages"],
            title=row["title"],
            producer=row["producer"],
            has_text_layer=None if htl is None else bool(htl),
            error=row["error"],
            snippet_count=row["snippet_count"],
            batches_total=row["batches_total"],
            batches_done=row["batches_done"],
            embedder=row["embedder"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            metadata=_json_load(row["metadata"], {}),
        )

    def _ensure_file(self, path: Path, data: bytes, what: str) -> None:
        """Under the write lock: make sure a content file exists before a row points at it."""
        if not _blob_present(path, len(data)):
            _atomic_write(path, data, what)

    def add_document(
        self, data: bytes, filename: str, info: DocumentInfo | None = None
    ) -> tuple[Document, bool]:
        """Store an uploaded PDF; same bytes give the same document. Returns (doc, created)."""
        if not data:
            raise ValueError("The uploaded file is empty.")
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        doc_id = sha[:16]
        path = self._pdf_file(sha)
        if not _blob_present(path, len(data)):
            _atomic_write(path, data, "the uploaded PDF")
        now = time.time()
        stale_images: set[str] = set()
        committed = False
        try:
            with self._write("the uploaded PDF") as conn:
                row = conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
                if row is not None and row["sha256"] != sha:
                    raise StorageError("Two different PDFs map to the same document id; cannot store this one.")
                # A concurrent delete of the same bytes may have removed the file meanwhile.
                self._ensure_file(path, data, "the uploaded PDF")
                if row is None:
                    conn.execute(
                        """INSERT INTO documents (id, sha256, filename, size, state, stage, progress,
                               created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', 'Queued', 0, ?, ?)""",
                        (doc_id, sha, sanitize_filename(filename), len(data), now, now),
                    )
                    created = True
                elif row["state"] == "failed":
                    # A retry starts clean: partial output of the failed run is dropped.
                    stale_images, removed = self._clear_content(conn, doc_id)
                    if removed:
                        self._bump_vectors(conn, removed=True)
                    conn.execute(
                        """UPDATE documents SET state = 'queued', stage = 'Queued', progress = 0,
                               error = NULL, snippet_count = 0, batches_total = NULL, batches_done = 0,
                               embedder = NULL, updated_at = ? WHERE id = ?""",
                        (now, doc_id),
                    )
                    created = True
                else:
                    created = False
                if created and info is not None:
                    self._apply_info(conn, doc_id, info)
                row = conn.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
            committed = True
        finally:
            if not committed:
                # Only removes the file if no row uses it (e.g. it was ours, or a crash leftover).
                self._collect(pdf_shas=[sha])
        if stale_images:
            self._collect(images=stale_images)
        doc = self._row_to_document(row)
        log.info(
            "document %s %s (%s, %d bytes)", doc_id, "added" if created else "already present", doc.filename, doc.size
        )
        return doc, created

    def _apply_info(self, conn: sqlite3.Connection, doc_id: str, info: DocumentInfo) -> None:
        conn.execute(
            """UPDATE documents SET pages = ?, title = ?, producer = ?, has_text_layer = ?, metadata = ?
               WHERE id = ?""",
            (
                int(getattr(info, "page_count", 0) or 0),
                str(getattr(info, "title", "") or ""),
                str(getattr(info, "producer", "") or ""),
                None if getattr(info, "has_text_layer", None) is None else int(bool(info.has_text_layer)),
                json.dumps(getattr(info, "metadata", None) or {}, default=_json_default),
                doc_id,
            ),
        )

    def get_document(self, doc_id: str) -> Document | None:
        """One document, or None."""
        if not isinstance(doc_id, str) or not _DOC_ID.fullmatch(doc_id):
            return None
        row = self._conn().execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return None if row is None else self._row_to_document(row)

    def list_documents(self) -> list[Document]:
        """All documents, newest first."""
        rows = self._conn().execute("SELECT * FROM documents ORDER BY created_at DESC, rowid DESC").fetchall()
        return [self._row_to_document(r) for r in rows]

    _UPDATABLE = frozenset(
        {"state", "stage", "progress", "error", "pages", "title", "producer", "has_text_layer", "metadata", "embedder"}
    )

    def update_document(self, doc_id: str, **fields: Any) -> Document | None:
        """Change status/info fields and bump updated_at; None if the document is gone."""
        unknown = set(fields) - self._UPDATABLE
        if unknown:
            raise TypeError(f"update_document() cannot set {sorted(unknown)}; allowed: {sorted(self._UPDATABLE)}")
        if not isinstance(doc_id, str) or not _DOC_ID.fullmatch(doc_id):
            return None
        values: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "state":
                if value not in STATES:
                    raise ValueError(f"unknown state {value!r}; expected one of {STATES}")
                if value == "ready" and "progress" not in fields:
                    values["progress"] = 1.0
            elif key == "progress":
                value = min(1.0, max(0.0, float(value)))
            elif key == "stage":
                value = str(value or "")[:MAX_STAGE]
            elif key == "error":
                value = None if value is None else str(value)[:MAX_ERROR]
            elif key == "pages":
                value = int(value)
            elif key in ("title", "producer"):
                value = str(value or "")
            elif key == "has_text_layer":
                value = None if value is None else int(bool(value))
            elif key == "metadata":
                value = json.dumps(value or {}, default=_json_default)
            values[key] = value
        values["updated_at"] = time.time()
        with self._write("the document status") as conn:
            current = conn.execute(
                "SELECT state, batches_total, batches_done FROM documents WHERE id = ?", (doc_id,)
            ).fetchone()
            if current is None:
                return None
            if (
                values.get("state") in ("queued", "extracting", "embedding")
                and current["state"] == "ready"
                and current["batches_total"] is not None
                and current["batches_done"] >= current["batches_total"]
            ):
                # A late status write from a slower task (e.g. "Embedded 3 of 4" landing after
                # the last batch made the document ready) must not un-finish it.
                log.debug("document %s is complete; ignoring state %r", doc_id, values["state"])
                for key in ("state", "stage", "progress", "error"):
                    values.pop(key, None)
            assignments = ", ".join(f"{k} = ?" for k in values)  # keys come from _UPDATABLE only
            row = conn.execute(
                f"UPDATE documents SET {assignments} WHERE id = ? RETURNING *", (*values.values(), doc_id)
            ).fetchall()
        return self._row_to_document(row[0]) if row else None

    def delete_document(self, doc_id: str) -> bool:
        """Remove a document's rows, vectors, PDF, unshared images and thumbnails."""
        if not isinstance(doc_id, str) or not _DOC_ID.fullmatch(doc_id):
            return False
        with self._write("the deletion") as conn:
            row = conn.execute("SELECT sha256 FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if row is None:
                return False
            images, removed = self._clear_content(conn, doc_id)
            conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
            if removed:
                self._bump_vectors(conn, removed=True)
        # Files go after the rows are committed, so a failed commit never loses files.
        self._collect(images=images, pdf_shas=[row["sha256"]])
        shutil.rmtree(self.thumb_dir / doc_id, ignore_errors=True)
        log.info("document %s deleted", doc_id)
        return True

    def _clear_content(self, conn: sqlite3.Connection, doc_id: str) -> tuple[set[str], int]:
        """Delete a document's snippets, vectors, batches; return (image names, vectors removed)."""
        images = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT image FROM snippets WHERE document_id = ? AND image IS NOT NULL", (doc_id,)
            )
        }
        removed = conn.execute("DELETE FROM vectors WHERE document_id = ?", (doc_id,)).rowcount
        conn.execute("DELETE FROM snippets WHERE document_id = ?", (doc_id,))
        conn.execute("DELETE FROM batches WHERE document_id = ?", (doc_id,))
        return images, removed

    def _collect(self, images: Iterable[str] = (), pdf_shas: Iterable[str] = ()) -> None:
        """Unlink content files no row references any more (under the write lock)."""
        images = [n for n in images if n and _IMAGE_NAME.fullmatch(n)]
        pdf_shas = list(pdf_shas)
        if not images and not pdf_shas:
            return
        try:
            with self._write("the cleanup") as conn:
                for name in images:
                    if conn.execute("SELECT 1 FROM snippets WHERE image = ? LIMIT 1", (name,)).fetchone() is None:
                        self._unlink(self.image_dir / name)
                for sha in pdf_shas:
                    if conn.execute("SELECT 1 FROM documents WHERE sha256 = ?", (sha,)).fetchone() is None:
                        self._unlink(self._pdf_file(sha))
        except (StorageError, sqlite3.Error) as exc:
            # Leftover files are harmless (sweep_orphans removes them); don't mask the caller's result.
            log.warning("could not clean up files: %s", exc)

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)

    def sweep_orphans(self, min_age: float = 3600.0) -> int:
        """Remove unreferenced content files and stale temp files older than min_age s; returns count."""
        cutoff = time.time() - min_age
        removed = 0
        candidates: list[Path] = []
        for folder in (self.pdf_dir, self.image_dir):
            with contextlib.suppress(OSError):
                for path in folder.iterdir():
                    with contextlib.suppress(OSError):
                        if path.stat().st_mtime < cutoff:
                            candidates.append(path)
        if not candidates:
            return 0
        with self._write("the cleanup") as conn:
            for path in candidates:
                name = path.name
                if name.startswith(".") and name.endswith(".part"):
                    referenced = False
                elif path.parent == self.image_dir and _IMAGE_NAME.fullmatch(name):
                    referenced = conn.execute("SELECT 1 FROM snippets WHERE image = ? LIMIT 1", (name,)).fetchone()
                elif path.parent == self.pdf_dir and re.fullmatch(r"[0-9a-f]{64}\.pdf", name):
                    referenced = conn.execute(
                        "SELECT 1 FROM documents WHERE sha256 = ?", (name[:-4],)
                    ).fetchone()
                else:
                    continue  # not ours; leave it alone
                if not referenced:
                    self._unlink(path)
                    removed += 1
        return removed

    # ---- batches

    def begin_batches(self, doc_id: str, total: int) -> None:
        """Record how many batches a document has (idempotent; a different total restarts it)."""
        total = int(total)
        if total < 0:
            raise ValueError("total must be >= 0")
        stale_images: set[str] = set()
        with self._write("the document status") as conn:
            row = conn.execute("SELECT batches_total FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if row is None or row["batches_total"] == total:
                return
            if row["batches_total"] is not None:
                # Batch numbering changed (e.g. different batch size): old batches mean nothing now.
                log.warning(
                    "document %s: batches_total %s -> %s, restarting its batches", doc_id, row["batches_total"], total
                )
                stale_images, removed = self._clear_content(conn, doc_id)
                if removed:
                    self._bump_vectors(conn, removed=True)
            self._recount(conn, doc_id, total)
        if stale_images:
            self._collect(images=stale_images)

    def done_batches(self, doc_id: str) -> set[int]:
        """Indexes of the batches already saved for a document."""
        rows = self._conn().execute("SELECT batch_index FROM batches WHERE document_id = ?", (doc_id,))
        return {r[0] for r in rows}

    def _recount(
        self, conn: sqlite3.Connection, doc_id: str, total: int | None, embedder: str | None = None
    ) -> sqlite3.Row:
        # fetchall, not fetchone: an unfinished RETURNING statement would block the COMMIT.
        snippet_count = conn.execute("SELECT count(*) FROM snippets WHERE document_id = ?", (doc_id,)).fetchone()[0]
        done = conn.execute("SELECT count(*) FROM batches WHERE document_id = ?", (doc_id,)).fetchone()[0]
        sets = ["snippet_count = ?", "batches_total = ?", "batches_done = ?", "updated_at = ?"]
        args: list[Any] = [snippet_count, total, done, time.time()]
        if embedder is not None:
            sets.append("embedder = ?")
            args.append(embedder)
        if total is not None:
            if done >= total:
                sets += ["progress = 1.0", "state = 'ready'", "stage = 'Ready'", "error = NULL"]
            else:
                sets.append("progress = ?")
                args.append(done / total)
        return conn.execute(
            f"UPDATE documents SET {', '.join(sets)} WHERE id = ? RETURNING *", (*args, doc_id)
        ).fetchall()[0]

    def _prepare(self, doc_id: str, snip: Snippet, seen: set[int]) -> _Prepared:
        ordinal = int(snip.ordinal)
        if ordinal in seen:
            raise ValueError(f"duplicate snippet ordinal {ordinal} in one batch")
        seen.add(ordinal)
        if snip.document_id not in (None, doc_id):
            raise ValueError(f"snippet {ordinal} belongs to document {snip.document_id}, not {doc_id}")
        page = int(snip.page)
        if page < 1:
            raise ValueError(f"snippet {ordinal}: page must be >= 1 (1-based), got {page}")
        bbox = None
        if snip.bbox is not None:
            box = [float(v) for v in snip.bbox]
            if len(box) != 4:
                raise ValueError(f"snippet {ordinal}: bbox needs 4 numbers")
            bbox = json.dumps(box)
        kind = str(snip.kind or "text")[:32]
        image_name = image_data = None
        encoded = snip.image_bytes()
        if encoded is not None:
            image_data, fmt = encoded
            ext = IMAGE_EXTS.get(str(fmt).lower().lstrip("."))
            if ext is None:
                raise ValueError(f"snippet {ordinal}: unsupported image format {fmt!r}")
            image_data = bytes(image_data)
            image_name = f"{hashlib.sha256(image_data).hexdigest()}.{ext}"
        vector = None
        dim = 0
        embedder = None
        if snip.embedding is not None:
            if not snip.embedding_model:
                raise ValueError(f"snippet {ordinal} has an embedding but no embedding_model")
            vec = _as_vector(snip.embedding, f"snippet {ordinal}")
            vector, dim, embedder = vec.tobytes(), int(vec.shape[0]), str(snip.embedding_model)
        return _Prepared(
            ordinal=ordinal,
            page=page,
            bbox=bbox,
            text=str(snip.text or ""),
            kind=kind,
            meta=json.dumps(snip.meta or {}, default=_json_default),
            image_name=image_name,
            image_data=image_data,
            vector=vector,
            dim=dim,
            embedder=embedder,
        )

    def _register_dims(self, conn: sqlite3.Connection, dims: dict[str, set[int]]) -> None:
        for name, found in dims.items():
            if len(found) > 1:
                raise DimensionMismatch(
                    f"embedder {name!r} produced vectors of different sizes {sorted(found)} in one call"
                )
            dim = next(iter(found))
            conn.execute("INSERT OR IGNORE INTO embedders(name, dim) VALUES (?, ?)", (name, dim))
            known = conn.execute("SELECT dim FROM embedders WHERE name = ?", (name,)).fetchone()[0]
            if known != dim:
                raise DimensionMismatch(
                    f"embedder {name!r} produced {dim}-dimensional vectors, but the database already holds "
                    f"{known}-dimensional vectors under that name; use a distinct embedder name for a "
                    f"different model (or delete_vectors({name!r}) first)."
                )

    def _put_vector(
        self, conn: sqlite3.Connection, snippet_id: int, embedder: str, dim: int, blob: bytes
    ) -> tuple[int, int]:
        """Insert or replace one vector; returns (added, removed)."""
        old = conn.execute(
            "SELECT id, vector FROM vectors WHERE snippet_id = ? AND embedder = ?", (snippet_id, embedder)
        ).fetchone()
        if old is not None and old["vector"] == blob:
            return 0, 0
        removed = 0
        if old is not None:
            # Delete + insert (new id) rather than UPDATE: an index appending "id > last"
            # would never see an in-place change.
            conn.execute("DELETE FROM vectors WHERE id = ?", (old["id"],))
            removed = 1
        cur = conn.execute(
            """INSERT INTO vectors (snippet_id, document_id, embedder, dim, vector)
               SELECT id, document_id, ?, ?, ? FROM snippets WHERE id = ?""",
            (embedder, dim, blob, snippet_id),
        )
        return cur.rowcount, removed

    @staticmethod
    def _bump_vectors(conn: sqlite3.Connection, removed: bool) -> None:
        names = ("vectors_version", "vectors_epoch") if removed else ("vectors_version",)
        conn.executemany("UPDATE counters SET value = value + 1 WHERE name = ?", [(n,) for n in names])

    def save_batch(self, doc_id: str, batch_index: int, snippets: list[Snippet]) -> Document | None:
        """Idempotently upsert one batch of snippets (+images, vectors) by ordinal; None if the doc is gone."""
        batch_index = int(batch_index)
        if batch_index < 0:
            raise ValueError("batch_index must be >= 0")
        if self.get_document(doc_id) is None:
            return None
        seen: set[int] = set()
        prepared = [self._prepare(doc_id, s, seen) for s in snippets]
        images: dict[str, bytes] = {p.image_name: p.image_data for p in prepared if p.image_name}
        new_files: list[str] = []
        committed = False
        stale_images: set[str] = set()
        row = None
        try:
            for name, data in images.items():
                path = self.image_dir / name
                if not _blob_present(path, len(data)):
                    _atomic_write(path, data, "a snippet image")
                    new_files.append(name)
            with self._write("the extracted snippets") as conn:
                doc = conn.execute("SELECT batches_total FROM documents WHERE id = ?", (doc_id,)).fetchone()
                if doc is None:
                    committed = True  # nothing to roll back; new files are collected below
                    stale_images.update(new_files)
                    return None
                total = doc["batches_total"]
                if total is not None and batch_index >= total:
                    raise ValueError(f"batch_index {batch_index} out of range for {total} batches")
                for name, data in images.items():
                    self._ensure_file(self.image_dir / name, data, "a snippet image")
                dims: dict[str, set[int]] = {}
                for p in prepared:
                    if p.embedder:
                        dims.setdefault(p.embedder, set()).add(p.dim)
                self._register_dims(conn, dims)

                added = removed = 0
                # Upsert by (document_id, ordinal). Snippets missing from a re-save are kept:
                # callers save an empty batch to re-check completion, which must not erase it.
                for p in prepared:
                    old = conn.execute(
                        "SELECT id, text, image FROM snippets WHERE document_id = ? AND ordinal = ?",
                        (doc_id, p.ordinal),
                    ).fetchone()
                    if old is None:
                        cur = conn.execute(
                            """INSERT INTO snippets
                                   (document_id, ordinal, batch_index, page, bbox, text, kind, meta, image)
                               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                            (doc_id, p.ordinal, batch_index, p.page, p.bbox, p.text, p.kind, p.meta, p.image_name),
                        )
                        sid = cur.lastrowid
                    else:
                        sid = old["id"]
                        conn.execute(
                            """UPDATE snippets SET batch_index = ?, page = ?, bbox = ?, text = ?, kind = ?, meta = ?,
                                   image = ? WHERE id = ?""",
                            (batch_index, p.page, p.bbox, p.text, p.kind, p.meta, p.image_name, sid),
                        )
                        if (old["text"], old["image"]) != (p.text, p.image_name):
                            # Content changed: vectors of every embedder for it are stale.
                            removed += conn.execute("DELETE FROM vectors WHERE snippet_id = ?", (sid,)).rowcount
                            if old["image"] and old["image"] != p.image_name:
                                stale_images.add(old["image"])
                    if p.vector is not None:
                        a, r = self._put_vector(conn, sid, p.embedder, p.dim, p.vector)
                        added += a
                        removed += r
                conn.execute(
                    """INSERT INTO batches (document_id, batch_index, snippet_count, done_at)
                       VALUES (?, ?, (SELECT count(*) FROM snippets WHERE document_id = ? AND batch_index = ?), ?)
                       ON CONFLICT (document_id, batch_index)
                       DO UPDATE SET snippet_count = excluded.snippet_count, done_at = excluded.done_at""",
                    (doc_id, batch_index, doc_id, batch_index, time.time()),
                )
                if added or removed:
                    self._bump_vectors(conn, removed=bool(removed))
                used = Counter(p.embedder for p in prepared if p.embedder)
                embedder = used.most_common(1)[0][0] if used else None
                row = self._recount(conn, doc_id, total, embedder)
            committed = True
        finally:
            if not committed:
                stale_images.update(new_files)
            if stale_images:
                self._collect(images=stale_images)
        doc = self._row_to_document(row)
        log.debug(
            "document %s: batch %d saved (%d snippets, %d/%s batches)",
            doc_id, batch_index, len(prepared), doc.batches_done, doc.batches_total,
        )
        return doc

    def unfinished_documents(self, older_than: float = 0.0) -> list[Document]:
        """Documents not ready/failed whose last update is older than older_than seconds."""
        rows = self._conn().execute(
            "SELECT * FROM documents WHERE state NOT IN ('ready', 'failed') AND updated_at < ? ORDER BY created_at",
            (time.time() - older_than,),
        ).fetchall()
        return [self._row_to_document(r) for r in rows]

    def queued_count(self) -> int:
        """Number of documents not yet ready or failed (for backpressure)."""
        return self._conn().execute(
            "SELECT count(*) FROM documents WHERE state NOT IN ('ready', 'failed')"
        ).fetchone()[0]

    # ---- snippets

    _SNIPPET_COLS = """s.id, s.document_id, s.ordinal, s.page, s.bbox, s.text, s.kind, s.meta, s.image,
        EXISTS (SELECT 1 FROM vectors v WHERE v.snippet_id = s.id) AS has_vector"""

    @staticmethod
    def _row_to_snippet(row: sqlite3.Row) -> StoredSnippet:
        bbox = _json_load(row["bbox"], None)
        return StoredSnippet(
            id=row["id"],
            document_id=row["document_id"],
            ordinal=row["ordinal"],
            page=row["page"],
            bbox=tuple(bbox) if bbox is not None else None,
            text=row["text"],
            kind=row["kind"],
            meta=_json_load(row["meta"], {}),
            image_path=row["image"],
            has_vector=bool(row["has_vector"]),
        )

    def snippets(self, doc_id: str, *, limit: int | None = None, offset: int = 0) -> list[StoredSnippet]:
        """A document's snippets in reading order (by ordinal)."""
        rows = self._conn().execute(
            f"SELECT {self._SNIPPET_COLS} FROM snippets s WHERE s.document_id = ? ORDER BY s.ordinal LIMIT ? OFFSET ?",
            (doc_id, -1 if limit is None else int(limit), int(offset)),
        ).fetchall()
        return [self._row_to_snippet(r) for r in rows]

    def get_snippet(self, snippet_id: int) -> StoredSnippet | None:
        """One snippet by id, or None."""
        row = self._conn().execute(
            f"SELECT {self._SNIPPET_COLS} FROM snippets s WHERE s.id = ?", (int(snippet_id),)
        ).fetchone()
        return None if row is None else self._row_to_snippet(row)

    def get_snippets(self, snippet_ids: Iterable[int]) -> list[StoredSnippet]:
        """Several snippets by id, in the order given; missing ids are skipped."""
        ids = [int(i) for i in snippet_ids]
        found: dict[int, StoredSnippet] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {self._SNIPPET_COLS} FROM snippets s WHERE s.id IN ({marks})"
            for row in self._conn().execute(query, chunk):
                found[row["id"]] = self._row_to_snippet(row)
        return [found[i] for i in ids if i in found]

    def export_rows(self, doc_id: str, embedder: str | None = None) -> Iterator[dict]:
        """Rows for JSONL/parquet export, in reading order; vectors from `embedder` (default: the doc's)."""
        doc = self.get_document(doc_id)
        if doc is None:
            return
        embedder = embedder or doc.embedder
        last = -(2**63)
        while True:
            # Keyset pages keep each read short instead of holding one snapshot for the whole export.
            rows = self._conn().execute(
                """SELECT s.id, s.ordinal, s.page, s.bbox, s.text, s.kind, s.meta, s.image, v.vector, v.embedder
                   FROM snippets s LEFT JOIN vectors v ON v.snippet_id = s.id AND v.embedder = ?
                   WHERE s.document_id = ? AND s.ordinal > ? ORDER BY s.ordinal LIMIT ?""",
                (embedder, doc_id, last, _EXPORT_CHUNK),
            ).fetchall()
            if not rows:
                return
            for r in rows:
                bbox = _json_load(r["bbox"], None)
                yield {
                    "document_id": doc_id,
                    "snippet_id": r["id"],
                    "ordinal": r["ordinal"],
                    "page": r["page"],
                    "bbox": bbox,
                    "kind": r["kind"],
                    "text": r["text"],
                    "meta": _json_load(r["meta"], {}),
                    "image": r["image"],
                    "embedding": None if r["vector"] is None else np.frombuffer(r["vector"], dtype="<f4").tolist(),
                    "embedder": r["embedder"],
                }
            last = rows[-1]["ordinal"]

    # ---- vectors

    def embedder_counts(self) -> dict[str, int]:
        """Number of stored vectors per embedder name."""
        rows = self._conn().execute("SELECT embedder, count(*) FROM vectors GROUP BY embedder ORDER BY embedder")
        return {r[0]: r[1] for r in rows}

    def embedder_dims(self) -> dict[str, int]:
        """Vector dimension registered for each embedder name."""
        return {r[0]: r[1] for r in self._conn().execute("SELECT name, dim FROM embedders ORDER BY name")}

    def snippets_needing_vectors(self, embedder: str, limit: int, *, after_id: int = 0) -> list[Snippet]:
        """Snippets without a vector from `embedder` (id > after_id); meta carries snippet_id and image."""
        from snippets import Snippet

        rows = self._conn().execute(
            """SELECT s.id, s.document_id, s.ordinal, s.page, s.bbox, s.text, s.kind, s.meta, s.image
               FROM snippets s
               WHERE s.id > ? AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.snippet_id = s.id AND v.embedder = ?)
               ORDER BY s.id LIMIT ?""",
            (int(after_id), embedder, int(limit)),
        ).fetchall()
        out = []
        for r in rows:
            bbox = _json_load(r["bbox"], None)
            meta = _json_load(r["meta"], {})
            meta["snippet_id"] = r["id"]
            if r["image"]:
                meta["image"] = r["image"]
            out.append(
                Snippet(
                    text=r["text"],
                    page=r["page"],
                    bbox=tuple(bbox) if bbox is not None else None,
                    document_id=r["document_id"],
                    ordinal=r["ordinal"],
                    kind=r["kind"],
                    meta=meta,
                )
            )
        return out

    def save_vectors(self, items: list[tuple[int, np.ndarray]], embedder: str) -> None:
        """Store (snippet_id, vector) pairs for `embedder`; ids of deleted snippets are skipped."""
        if not embedder:
            raise ValueError("embedder name is required")
        prepared = [(int(sid), _as_vector(vec, f"snippet {sid}")) for sid, vec in items]
        if not prepared:
            return
        with self._write("the vectors") as conn:
            self._register_dims(conn, {embedder: {v.shape[0] for _, v in prepared}})
            added = removed = 0
            for sid, vec in prepared:
                a, r = self._put_vector(conn, sid, embedder, int(vec.shape[0]), vec.tobytes())
                added += a
                removed += r
            if added or removed:
                self._bump_vectors(conn, removed=bool(removed))

    def delete_vectors(self, embedder: str) -> int:
        """Drop every vector of one embedder (and its registered dimension); returns the count."""
        with self._write("the vectors") as conn:
            n = conn.execute("DELETE FROM vectors WHERE embedder = ?", (embedder,)).rowcount
            conn.execute("DELETE FROM embedders WHERE name = ?", (embedder,))
            if n:
                self._bump_vectors(conn, removed=True)
        return n

    def vectors_version(self) -> int:
        """Counter bumped by every change to stored vectors."""
        return self.vectors_state()[0]

    def vectors_state(self) -> tuple[int, int]:
        """(version, epoch): version moves on any vector change, epoch only on removals/replacements."""
        rows = dict(self._conn().execute("SELECT name, value FROM counters").fetchall())
        return rows["vectors_version"], rows["vectors_epoch"]

    def _load_vectors(
        self, embedder: str, after_rowid: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, tuple[int, int]]:
        """load_vectors plus the (version, epoch) of the same snapshot."""
        with self._read() as conn:
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            state = (counters["vectors_version"], counters["vectors_epoch"])
            dim_row = conn.execute("SELECT dim FROM embedders WHERE name = ?", (embedder,)).fetchone()
            dim = dim_row[0] if dim_row else 0
            n = conn.execute(
                "SELECT count(*) FROM vectors WHERE embedder = ? AND id > ?", (embedder, after_rowid)
            ).fetchone()[0]
            ids = np.empty(n, dtype=np.int64)
            matrix = np.empty((n, dim), dtype=np.float32)
            docs: list[str] = []
            max_rowid = after_rowid
            cur = conn.execute(
                "SELECT id, snippet_id, document_id, vector FROM vectors WHERE embedder = ? AND id > ? ORDER BY id",
                (embedder, after_rowid),
            )
            i = 0
            # Filled chunk by chunk so peak memory is the matrix plus one chunk of blobs.
            while rows := cur.fetchmany(_LOAD_CHUNK):
                for rowid, sid, doc, blob in rows:
                    ids[i] = sid
                    matrix[i] = np.frombuffer(blob, dtype="<f4")
                    docs.append(doc)
                    i += 1
                max_rowid = rows[-1][0]
        return ids, np.array(docs, dtype="U16"), matrix, max_rowid, state

    def load_vectors(self, embedder: str, after_rowid: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(snippet_ids int64, document ids, float32 matrix [n, dim], max rowid) for rows after after_rowid."""
        ids, docs, matrix, max_rowid, _ = self._load_vectors(embedder, after_rowid)
        return ids, docs, matrix, max_rowid


# --------------------------------------------------------------------------- index


class VectorIndex:
    """Exact top-k by inner product over one embedder's stored vectors, held in memory (numpy) in the web process."""

    def __init__(self, store: Store, embedder: str):
        """An empty index; call refresh() to load."""
        self.store = store
        self.embedder = embedder
        # _lock guards the snapshot fields (held for microseconds); _refresh_lock serialises
        # refreshes so a slow reload never blocks searches.
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._matrix = np.empty((0, 0), dtype=np.float32)  # capacity rows; only [:_n] valid
        self._ids = np.empty(0, dtype=np.int64)
        self._docs = np.empty(0, dtype=np.int32)
        self._doc_codes: dict[str, int] = {}
        self._n = 0
        self._dim = 0
        self._state: tuple[int, int] | None = None
        self._max_rowid = 0

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        """Vector dimension (0 while empty)."""
        return self._dim

    def refresh(self) -> None:
        """Catch up with the store: no-op if unchanged, append on inserts, full reload after removals."""
        with self._refresh_lock:
            state = self.store.vectors_state()
            if state == self._state:
                return
            if self._state is None or state[1] != self._state[1]:
                self._reload()
            else:
                self._append()

    def _reload(self) -> None:
        ids, docs, matrix, max_rowid, state = self.store._load_vectors(self.embedder, 0)
        codes: dict[str, int] = {}
        doc_codes = np.fromiter(
            (codes.setdefault(d, len(codes)) for d in docs.tolist()), dtype=np.int32, count=len(docs)
        )
        with self._lock:
            self._matrix, self._ids, self._docs, self._doc_codes = matrix, ids, doc_codes, codes
            self._n = len(ids)
            self._dim = matrix.shape[1] if len(ids) else 0
            self._max_rowid, self._state = max_rowid, state
        log.info("vector index %r reloaded: %d vectors", self.embedder, self._n)

    def _append(self) -> None:
        ids, docs, matrix, max_rowid, state = self.store._load_vectors(self.embedder, self._max_rowid)
        if state[1] != self._state[1]:
            # A removal slipped in between reading the state and loading: start over.
            self._reload()
            return
        m = len(ids)
        if m == 0:
            with self._lock:
                self._max_rowid, self._state = max_rowid, state
            return
        if self._n and matrix.shape[1] != self._dim:
            # Only possible if the embedder was deleted and re-registered with another size.
            self._reload()
            return
        n = self._n
        codes = dict(self._doc_codes)
        new_codes = np.fromiter((codes.setdefault(d, len(codes)) for d in docs.tolist()), dtype=np.int32, count=m)
        buf, id_buf, doc_buf = self._matrix, self._ids, self._docs
        if n + m > buf.shape[0] or buf.shape[1] != matrix.shape[1]:
            cap = max(n + m, 2 * buf.shape[0], 1024)
            buf = np.empty((cap, matrix.shape[1]), dtype=np.float32)
            id_buf = np.empty(cap, dtype=np.int64)
            doc_buf = np.empty(cap, dtype=np.int32)
            if n:
                buf[:n] = self._matrix[:n]
                id_buf[:n] = self._ids[:n]
                doc_buf[:n] = self._docs[:n]
        # Rows past _n are invisible to searches, so writing them outside _lock is safe.
        buf[n : n + m] = matrix
        id_buf[n : n + m] = ids
        doc_buf[n : n + m] = new_codes
        with self._lock:
            self._matrix, self._ids, self._docs, self._doc_codes = buf, id_buf, doc_buf, codes
            self._n = n + m
            self._dim = matrix.shape[1]
            self._max_rowid, self._state = max_rowid, state
        log.debug("vector index %r: +%d vectors (%d total)", self.embedder, m, n + m)

    def search(self, query: np.ndarray, k: int, document_id: str | None = None) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) by inner product, best first; optionally within one document."""
        with self._lock:
            matrix, ids, docs, n, dim = self._matrix, self._ids, self._docs, self._n, self._dim
            code = self._doc_codes.get(document_id) if document_id is not None else None
        if k <= 0 or n == 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != dim:
            raise ValueError(f"query has {q.shape[0]} dimensions; embedder {self.embedder!r} vectors have {dim}")
        if document_id is not None:
            if code is None:
                return []
            rows = np.flatnonzero(docs[:n] == code)
            scores = matrix[rows] @ q
            cand_ids = ids[rows]
        else:
            scores = matrix[:n] @ q
            cand_ids = ids[:n]
        total = scores.shape[0]
        if k < total:
            top = np.argpartition(scores, total - k)[total - k :]
        else:
            top = np.arange(total)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(cand_ids[i]), float(scores[i])) for i in top]
