"""Content files under the data directory: PDFs, snippet images and page thumbnails.

Invariant that keeps files and rows consistent across processes: a file is only
unlinked while holding the database write lock and only when no row references it,
and a row referencing a file is only written under the write lock after checking
that the file exists (rewriting it if a concurrent delete removed it).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from docenrich.storage.base import StorageError, reason
from docenrich.storage.encoding import IMAGE_NAME, check_doc_id, thumb_key
from docenrich.storage.store import CONTENT, Garbage
from docenrich.storage.tables import documents, snippets

log = logging.getLogger(__name__)

_PDF_NAME = re.compile(r"[0-9a-f]{64}\.pdf")
# Files younger than this may belong to a write still in progress; the sweep leaves them.
ORPHAN_MIN_AGE_S = 3600.0
# Deletions trigger a sweep at most this often per store, so its directory scan stays rare.
SWEEP_INTERVAL_S = 24 * 3600.0


def atomic_write(path: Path, data: bytes, what: str) -> None:
    """Write data atomically (temp file beside it, os.replace), making its folder; StorageError on failure."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
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
        raise StorageError(f"Could not save {what}: {reason(exc)}.") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


class BlobsMixin:
    """Paths, atomic writes and reference-checked removal of the files rows point at."""

    data_dir: Path
    pdf_dir: Path
    image_dir: Path
    thumb_dir: Path

    def _init_blobs(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.pdf_dir = self.data_dir / "pdfs"
        self.image_dir = self.data_dir / "images"
        self.thumb_dir = self.data_dir / "thumbs"
        self._last_sweep: float | None = None
        try:
            for d in (self.data_dir, self.pdf_dir, self.image_dir, self.thumb_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Could not create the data directory (DATA_DIR): {reason(exc)}.") from exc

    def _file(self, table: str, *key: Any) -> Path:
        """Where content lives that PostgreSQL keeps as a row of `table`, by that row's primary key."""
        if table == "pdfs":
            return self.pdf_dir / f"{key[0]}.pdf"
        if table == "images":
            return self.image_dir / key[0]
        if table == "renditions":  # beside the page renderings, so it goes with them
            return self.thumb_dir / key[0] / "rendition.pdf"
        doc_id, page, width = key
        # The doc id is a content hash, so the name identifies the rendered page for good.
        suffix = f"-w{width}" if width else ""
        return self.thumb_dir / doc_id / f"p{page:05d}{suffix}.png"

    def pdf_path(self, doc_id: str) -> Path:
        """Path of a document's PDF; KeyError if the document does not exist."""
        sha = self._scalar(sa.select(documents.c.sha256).where(documents.c.id == check_doc_id(doc_id)))
        if sha is None:
            raise KeyError(doc_id)
        return self._file("pdfs", sha)

    def thumb_path(self, doc_id: str, page: int, width: int | None = None) -> Path:
        """Cache path of a page thumbnail (the file may not exist)."""
        return self._file("thumbs", *thumb_key(doc_id, page, width))

    def _load(self, table: sa.Table, *key: Any) -> bytes | None:
        try:
            return self._file(table.name, *key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def _save(self, table: sa.Table, data: bytes, doc_id: str, *key: Any) -> Path:
        path = self._file(table.name, doc_id, *key)
        atomic_write(path, data, CONTENT[table.name])
        if table.name == "renditions" and self.get_document(doc_id) is None:
            path.unlink(missing_ok=True)  # deleted meanwhile: its folder was removed before this write
        return path

    @contextlib.contextmanager
    def _content(self, pdfs: dict[str, bytes] | None = None,
                 images: dict[str, bytes] | None = None) -> Iterator[Garbage]:
        """Write the files a transaction will name before it takes the lock; collect what it left unused."""
        garbage, new = Garbage(), {"pdfs": [], "images": []}
        ok = False
        try:
            for kind, found in (("pdfs", pdfs), ("images", images)):
                for key, data in (found or {}).items():
                    if self._write_missing(self._file(kind, key), data, CONTENT[kind]):
                        new[kind].append(key)
            yield garbage
            ok = True
        finally:
            if not ok or garbage.check_new:
                # Rolled back, or the rows went away meanwhile: only files no row uses are removed.
                garbage.pdfs.update(new["pdfs"])
                garbage.images.update(new["images"])
            self._collect(garbage)

    @staticmethod
    def _write_missing(path: Path, data: bytes, what: str) -> bool:
        """Write a content file unless it is there already (with its size); whether it was written."""
        with contextlib.suppress(OSError):
            if path.stat().st_size == len(data):
                return False
        atomic_write(path, data, what)
        return True

    def _put(self, conn: sa.Connection, table: sa.Table, found: dict[str, bytes]) -> None:
        """Under the write lock: a concurrent delete of the same bytes may have removed a file meanwhile."""
        for key, data in found.items():
            self._write_missing(self._file(table.name, key), data, CONTENT[table.name])

    def _unlink_unused(self, images: list[str], pdfs: list[str]) -> int:
        """Under the write lock: unlink the images and PDFs no row names; how many."""
        if not images and not pdfs:
            return 0
        with self._write("the cleanup") as conn:
            unused = [self.image_dir / n for n in images if not _image_used(conn, n)]
            unused += [self._file("pdfs", sha) for sha in pdfs if not _pdf_used(conn, sha)]
            for path in unused:
                _unlink(path)
        return len(unused)

    def _collect(self, garbage: Garbage) -> None:
        """After a commit: unlink the content files no row references any more."""
        try:
            images = [n for n in garbage.images if n and IMAGE_NAME.fullmatch(n)]
            self._unlink_unused(images, list(garbage.pdfs))
        except (StorageError, sa.exc.DBAPIError) as exc:
            # Leftover files are harmless (sweep_orphans removes them); don't mask the caller's result.
            log.warning("could not clean up files: %s", exc)
        for doc_id in garbage.documents:
            shutil.rmtree(self.thumb_dir / doc_id, ignore_errors=True)
        if garbage.documents:
            # Deleting is already a clean-up and happens rarely: a good moment to also remove
            # files that crashed writers left behind (written, but their row never committed).
            self._sweep_now_and_then()

    def _sweep_now_and_then(self) -> None:
        """Run sweep_orphans if this store has not for SWEEP_INTERVAL_S; never raises."""
        now = time.monotonic()
        if self._last_sweep is not None and now - self._last_sweep < SWEEP_INTERVAL_S:
            return
        self._last_sweep = now
        try:
            removed = self.sweep_orphans()
        except (StorageError, sa.exc.DBAPIError) as exc:
            log.warning("could not sweep leftover files: %s", exc)
            return
        if removed:
            log.info("removed %d leftover files", removed)

    def sweep_orphans(self, min_age: float = ORPHAN_MIN_AGE_S) -> int:
        """Remove unreferenced content files and stale temp files older than min_age s; returns count."""
        old = self._old_files(time.time() - min_age)
        # Anything else in the folders is not ours: it is left alone.
        temp = [p for p in old if p.name.startswith(".") and p.name.endswith(".part")]
        for path in temp:
            _unlink(path)
        images = [p.name for p in old if p.parent == self.image_dir and IMAGE_NAME.fullmatch(p.name)]
        pdfs = [p.name[:-4] for p in old if p.parent == self.pdf_dir and _PDF_NAME.fullmatch(p.name)]
        return len(temp) + self._unlink_unused(images, pdfs)

    def _old_files(self, cutoff: float) -> list[Path]:
        """Files in the PDF and image folders last modified before cutoff."""
        candidates: list[Path] = []
        for folder in (self.pdf_dir, self.image_dir):
            with contextlib.suppress(OSError):
                for path in folder.iterdir():
                    with contextlib.suppress(OSError):
                        if path.stat().st_mtime < cutoff:
                            candidates.append(path)
        return candidates


def _image_used(conn: sa.Connection, name: str) -> bool:
    return conn.execute(sa.select(snippets.c.id).where(snippets.c.image == name).limit(1)).first() is not None


def _pdf_used(conn: sa.Connection, sha256: str) -> bool:
    return conn.execute(sa.select(documents.c.id).where(documents.c.sha256 == sha256)).first() is not None
