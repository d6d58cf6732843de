"""The vector files of one embedder under DATA_DIR/vectors/: append-only columns, a manifest, a deletion set.

Layout of DATA_DIR/vectors/<embedder slug>/:

    manifest.json       what is valid: base, generation, rows, document count, deleted set, graph
    lock                flock(2) taken by whoever writes (sync, compaction, graph switch)
    <base>.vec          float32 rows [rows, dim], append-only
    <base>.ids|.doc|.page|.kind   snippet id (int64), document code (int32), page (int32), kind code (int16)
    <base>.docids       document ids (16 ASCII bytes each), the document code being the position
    deleted-<gen>.npy   positions masked in that generation (sorted int64)
    graph-<base>-<rows>.usearch   an HNSW graph over the first <rows> rows (VECTOR_INDEX=hnsw)

A writer appends past the valid rows, flushes, then switches manifest.json with os.replace: a
reader sees the old generation or the new one, never a half-written one, and a crash mid-append
leaves bytes past `rows` that the next writer cuts off. SQLite stays the source of truth: sync()
catches up from the vectors table and its removal log, and rebuilds from it when the files are
missing, damaged or the log no longer reaches back.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1
# Per-row columns after the vectors: name, dtype.
COLUMNS = (("ids", np.int64), ("doc", np.int32), ("page", np.int32), ("kind", np.int16))
DOCID = np.dtype("S16")
# Past this share of masked rows a sync compacts the files (a new base without them).
COMPACT_SHARE = 0.2
_COMPACT_CHUNK = 65536


@dataclass(frozen=True)
class Manifest:
    """One generation of the files: which base, how many valid rows and document ids, what is masked."""

    embedder: str
    dim: int
    base: int = 1
    generation: int = 1
    rows: int = 0
    docs: int = 0
    deleted: int = 0  # masked rows; their positions are in deleted-<deleted_gen>.npy
    deleted_gen: int = 0
    kinds: list[str] = field(default_factory=list)
    max_rowid: int = 0
    removal_seq: int = 0
    state: tuple[int, int] = (0, 0)
    graph: str | None = None
    graph_rows: int = 0
    format: int = FORMAT


def vector_dir(data_dir: str | Path, embedder: str) -> Path:
    """Where one embedder's vector files live: a readable slug plus a digest (names may hold '/')."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", embedder)[:60]
    return Path(data_dir) / "vectors" / f"{slug}-{hashlib.sha1(embedder.encode()).hexdigest()[:8]}"


class VectorFiles:
    """The files of one embedder's directory: reading the manifest, and the writer's side (under flock)."""

    def __init__(self, directory: str | Path, embedder: str):
        """Files under `directory` (created on first write)."""
        self.dir = Path(directory)
        self.embedder = embedder

    def path(self, name: str) -> Path:
        """A file of this directory."""
        return self.dir / name

    def column(self, base: int, name: str) -> Path:
        """The file of one column of a base."""
        return self.dir / f"{base}.{name}"

    def manifest(self) -> Manifest | None:
        """The current manifest, or None when there is none (or it cannot be read)."""
        try:
            raw = json.loads(self.path("manifest.json").read_text())
        except (OSError, ValueError):
            return None
        if raw.get("format") != FORMAT or raw.get("embedder") != self.embedder:
            return None
        raw["state"] = tuple(raw["state"])
        return Manifest(**raw)

    def deleted_positions(self, m: Manifest) -> np.ndarray:
        """The masked row positions of a generation (empty when none)."""
        if not m.deleted:
            return np.empty(0, dtype=np.int64)
        return np.load(self.path(f"deleted-{m.deleted_gen}.npy"))

    @contextlib.contextmanager
    def locked(self, blocking: bool = True, name: str = "lock") -> Iterator[bool]:
        """Hold one of the directory's locks (flock, released if the process dies); yields whether it was taken."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.path(name), "a+b") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(self, m: Manifest) -> None:
        """Switch to a new generation atomically (write aside, fsync, os.replace)."""
        tmp = self.path(f"manifest.json.{os.getpid()}.tmp")
        data = asdict(m)
        data["state"] = list(m.state)
        with open(tmp, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path("manifest.json"))
        fsync_dir(self.dir)

    def append(self, m: Manifest, changes: dict, doc_codes: dict[str, int]) -> Manifest:
        """Under the lock: mask the removed snippets, append the new rows; the next manifest (not yet published)."""
        deleted = self.deleted_positions(m)
        removed = changes["removed"] or []
        if removed and m.rows:
            ids = _read_column(self.column(m.base, "ids"), np.int64, m.rows)
            hit = np.flatnonzero(np.isin(ids, np.asarray(removed, dtype=np.int64)))
            deleted = np.union1d(deleted, hit).astype(np.int64)
        kinds = list(m.kinds)
        kind_codes = {k: i for i, k in enumerate(kinds)}
        docs_before = len(doc_codes)
        n_new = len(changes["ids"])
        cols = new_columns(changes, doc_codes, kind_codes)
        kinds = list(kind_codes)
        new_docs = list(doc_codes)[docs_before:]
        if n_new:
            self._write_rows(m.base, m.rows, np.ascontiguousarray(changes["matrix"], dtype=np.float32), cols)
        if new_docs or n_new:
            append_bytes(self.column(m.base, "docids"), m.docs * DOCID.itemsize,
                          np.asarray(new_docs, dtype=DOCID).tobytes())
        gen = m.generation + 1
        if len(deleted) != m.deleted:
            np.save(self.path(f"deleted-{gen}.npy"), deleted)
        return replace(m, generation=gen, rows=m.rows + n_new, docs=len(doc_codes), kinds=kinds,
                       deleted=len(deleted), deleted_gen=gen if len(deleted) != m.deleted else m.deleted_gen,
                       max_rowid=changes["max_rowid"], removal_seq=changes["last_seq"], state=tuple(changes["state"]))

    def _write_rows(self, base: int, at: int, matrix: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        """Append rows after the first `at` (cutting off whatever a crashed writer left there)."""
        append_bytes(self.column(base, "vec"), at * matrix.shape[1] * 4, matrix.tobytes())
        for name, dtype in COLUMNS:
            append_bytes(self.column(base, name), at * np.dtype(dtype).itemsize,
                          np.asarray(cols[name], dtype=dtype).tobytes())

    def doc_codes(self, m: Manifest) -> dict[str, int]:
        """Document id -> code, as the manifest's generation has them."""
        if not m.docs:
            return {}
        raw = np.fromfile(self.column(m.base, "docids"), dtype=DOCID, count=m.docs)
        return {d.decode(): i for i, d in enumerate(raw.tolist())}

    def rebuild(self, changes: dict, old: Manifest | None, dim: int) -> Manifest:
        """Under the lock: a new base from a full read of the vectors table (published by the caller)."""
        base = (old.base + 1) if old else 1
        gen = (old.generation + 1) if old else 1
        m = Manifest(embedder=self.embedder, dim=dim, base=base, generation=gen,
                     max_rowid=0, removal_seq=changes["last_seq"], state=tuple(changes["state"]))
        for name in ("vec", "docids", *(c for c, _ in COLUMNS)):
            self.column(base, name).unlink(missing_ok=True)
        return self.append(m, {**changes, "removed": None}, {})

    def compact(self, m: Manifest) -> Manifest:
        """Under the lock: a new base holding only the unmasked rows, read from the current one in chunks."""
        keep = np.ones(m.rows, dtype=bool)
        keep[self.deleted_positions(m)] = False
        base = m.base + 1
        for name in ("vec", "docids", *(c for c, _ in COLUMNS)):
            self.column(base, name).unlink(missing_ok=True)
        vec = _read_column(self.column(m.base, "vec"), np.float32, m.rows, m.dim)
        cols = {name: _read_column(self.column(m.base, name), dtype, m.rows) for name, dtype in COLUMNS}
        at = 0
        for start in range(0, m.rows, _COMPACT_CHUNK):
            part = keep[start:start + _COMPACT_CHUNK]
            chunk = {name: col[start:start + _COMPACT_CHUNK][part] for name, col in cols.items()}
            rows = np.ascontiguousarray(vec[start:start + _COMPACT_CHUNK][part])
            if len(rows):
                self._write_rows(base, at, rows, chunk)
                at += len(rows)
        # Document codes stay as they were: the kept rows still name them.
        append_bytes(self.column(base, "docids"), 0, self.column(m.base, "docids").read_bytes()[:m.docs * 16])
        log.info("vector files %r compacted: %d -> %d rows", self.embedder, m.rows, at)
        return replace(m, base=base, generation=m.generation + 1, rows=at, deleted=0, deleted_gen=0,
                       graph=None, graph_rows=0)

    def collect(self, m: Manifest) -> None:
        """Remove the files no generation from `m` on uses (readers that mapped them keep their pages)."""
        keep = {"manifest.json", "lock", "graph.lock", f"deleted-{m.deleted_gen}.npy", m.graph or ""}
        for p in self.dir.iterdir():
            name = p.name
            if name in keep or name.startswith(f"{m.base}.") or name.endswith(".tmp"):
                continue
            if name.startswith("deleted-") and _number(name[8:-4]) >= m.deleted_gen:
                continue  # a newer generation's, written by a writer that is about to publish
            with contextlib.suppress(OSError):
                p.unlink()


class ManifestSource:
    """The part of a store MappedIndex asks, answered from the files' own manifest: for tools and
    benchmarks that search vector files without a database."""

    def __init__(self, files: VectorFiles):
        """Answer for these files."""
        self.files = files

    def vectors_state(self) -> tuple[int, int]:
        """The database counters the current generation was written from."""
        return tuple(self.files.manifest().state)

    def filter_document_ids(self, f) -> set[str]:
        """The documents a filter names (the files know no collections)."""
        return set(f.document_ids or ())


def new_columns(changes: dict, doc_codes: dict[str, int], kind_codes: dict[str, int]) -> dict[str, np.ndarray]:
    """The per-row columns of new rows, adding unseen documents and kinds to the code tables."""
    n = len(changes["ids"])
    return {
        "ids": np.asarray(changes["ids"], dtype=np.int64),
        "doc": np.fromiter((doc_codes.setdefault(str(d), len(doc_codes)) for d in changes["docs"].tolist()),
                           dtype=np.int32, count=n),
        "page": np.asarray(changes.get("pages", np.zeros(n)), dtype=np.int32),
        "kind": np.fromiter((kind_codes.setdefault(k, len(kind_codes)) for k in changes.get("kinds", [""] * n)),
                            dtype=np.int16, count=n),
    }


def append_bytes(path: Path, at: int, data: bytes) -> None:
    """Write data at byte `at`, dropping anything after it, and flush it to disk."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, at)
        view, done = memoryview(data), 0
        # One write(2) moves at most about 2 GiB on Linux: a rebuild of a million 1,024-d rows is twice that.
        while done < len(view):
            done += os.pwrite(fd, view[done:], at + done)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_column(path: Path, dtype, rows: int, dim: int | None = None) -> np.ndarray:
    """A read-only map of the first `rows` rows of a column file (an empty array for none)."""
    shape = (rows,) if dim is None else (rows, dim)
    if rows == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def map_column(path: Path, dtype, rows: int, dim: int | None = None) -> np.ndarray:
    """Public form of _read_column for readers: the valid rows of one column, memory-mapped."""
    return _read_column(path, dtype, rows, dim)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1
