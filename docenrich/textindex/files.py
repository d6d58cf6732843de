"""The word index's files under DATA_DIR/lexical/words/: per-row columns, postings segments, a manifest.

Layout (every file but the manifest is written once and never changed in place):

    manifest.json                 what is valid: base, generation, rows, segments, deleted set, state
    lock, optimize.lock           flock(2) of writers and of the background merge
    <base>.ids|.doc|.page|.kind   snippet id, document code, page, kind code per row (append-only)
    <base>.docids                 document ids (16 ASCII bytes each), the code being the position
    <base>.<seg>.vocab|.off|.rows|.imp   one segment's postings (postings.Segment)
    deleted-<gen>.npy             row positions masked in that generation

Rows are the snippets in id order. A sync appends the snippets past the manifest's max id as one
new segment, masks the rows whose snippets are gone, and switches manifest.json with os.replace,
as the vector files do (vectorindex/files.py). The database stays the truth: missing or damaged
files are rebuilt from it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from docenrich.textindex.postings import Segment, Triples, compacted
from docenrich.vectorindex.files import (
    COLUMNS,
    DOCID,
    VectorFiles,
    append_bytes,
    fsync_dir,
    map_column,
    new_columns,
    vector_dir,
)

log = logging.getLogger(__name__)

FORMAT = 1
SEGMENT_PARTS = (("vocab", np.uint64), ("off", np.int64), ("rows", np.uint32), ("imp", np.float32))
# More segments than this and a sync merges all but the first (small merges, in the caller's time).
MAX_SEGMENTS = 8
# The background optimisation (one segment, masked rows dropped) runs once the segments after the
# first hold this share of its rows, or this share of all rows is masked.
TAIL_SHARE = 0.25
DELETED_SHARE = 0.2
_READ_CHUNK = 20_000
_NONE = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class WordManifest:
    """One generation of the word index."""

    base: int = 1
    generation: int = 0
    rows: int = 0
    docs: int = 0
    kinds: list[str] = field(default_factory=list)
    segments: list[list] = field(default_factory=list)  # [name, first row, end row, terms, postings]
    total_len: int = 0
    max_id: int = 0
    state: tuple[int, ...] = (0, 0, 0)  # the source's state the generation was written from
    deleted: int = 0
    deleted_gen: int = 0
    format: int = FORMAT


def words_dir(data_dir: str | Path) -> Path:
    """Where the word index lives."""
    return Path(data_dir) / "lexical" / "words"


def sparse_dir(data_dir: str | Path, embedder: str) -> Path:
    """Where one embedder's learned-sparse index lives."""
    return Path(data_dir) / "lexical" / ("sparse-" + vector_dir(data_dir, embedder).name)


class WordFiles(VectorFiles):
    """A postings index's directory: the vector files' locking, publishing and column helpers, its own manifest."""

    def __init__(self, directory: str | Path):
        """Files under `directory` (created on first write)."""
        super().__init__(directory, "postings")

    def manifest(self) -> WordManifest | None:  # type: ignore[override]
        """The current manifest, or None when there is none (or it cannot be read)."""
        try:
            raw = json.loads(self.path("manifest.json").read_text())
        except (OSError, ValueError):
            return None
        if raw.get("format") != FORMAT:
            return None
        raw["state"] = tuple(raw["state"])
        return WordManifest(**raw)

    def publish(self, m: WordManifest) -> None:  # type: ignore[override]
        """Switch to a new generation atomically."""
        tmp = self.path(f"manifest.json.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            json.dump({**asdict(m), "state": list(m.state)}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path("manifest.json"))
        fsync_dir(self.dir)

    def write_segment(self, base: int, name: str, seg: Segment) -> list:
        """Write a segment's files; its manifest entry (without the row range)."""
        for part, dtype in SEGMENT_PARTS:
            append_bytes(self.column(base, f"{name}.{part}"), 0, np.ascontiguousarray(getattr(seg, part), dtype).tobytes())
        return [name, len(seg.vocab), len(seg.rows)]

    def map_segment(self, base: int, entry: list) -> Segment:
        """A segment of the manifest, memory-mapped."""
        name, _, _, terms, postings = entry
        sizes = {"vocab": terms, "off": terms + 1, "rows": postings, "imp": postings}
        return Segment(*(map_column(self.column(base, f"{name}.{p}"), d, sizes[p]) for p, d in SEGMENT_PARTS))

    def append_rows(self, m: WordManifest, rows: dict, doc_codes: dict[str, int]) -> WordManifest:
        """Write new rows' columns after the valid ones; the manifest with them (not yet published)."""
        kind_codes = {k: i for i, k in enumerate(m.kinds)}
        cols = new_columns(rows, doc_codes, kind_codes)
        docs_before = m.docs
        for name, dtype in COLUMNS:
            append_bytes(self.column(m.base, name), m.rows * np.dtype(dtype).itemsize, cols[name].tobytes())
        new_docs = list(doc_codes)[docs_before:]
        if new_docs:
            append_bytes(self.column(m.base, "docids"), m.docs * DOCID.itemsize,
                         np.asarray(new_docs, dtype=DOCID).tobytes())
        return replace(m, rows=m.rows + len(cols["ids"]), docs=len(doc_codes), kinds=list(kind_codes))

    def collect(self, m: WordManifest) -> None:  # type: ignore[override]
        """Remove the files no generation from `m` on uses (called under the lock, after publishing)."""
        keep = {"manifest.json", "lock", "optimize.lock", f"deleted-{m.deleted_gen}.npy"}
        keep.update(f"{m.base}.{name}" for name in ("docids", *(c for c, _ in COLUMNS)))
        keep.update(f"{m.base}.{s[0]}.{p}" for s in m.segments for p, _ in SEGMENT_PARTS)
        for p in self.dir.iterdir():
            if p.name in keep or p.name.endswith(".tmp"):
                continue
            if p.name.startswith("deleted-") and _number(p.name[8:-4]) >= m.deleted_gen:
                continue
            with contextlib.suppress(OSError):
                p.unlink()


def sync(source, files: WordFiles, blocking: bool = True) -> WordManifest | None:
    """Bring an index up to its source (sources.py): append new and changed rows as one segment,
    mask the rows of changed and removed snippets. None when not blocking and another writer holds
    the lock (an optimisation can hold it for a while)."""
    with files.locked(blocking=blocking) as got:
        if not got:
            return None
        m = files.manifest()
        if m is None or not _intact(files, m):
            m = _fresh(files, m)
        state = source.state()
        if m.state == state:
            return m
        gen = m.generation + 1
        plan = source.plan(m.state, state, m.max_id)
        # A snippet changed in place: its old row is masked, and it is indexed again as a new row.
        stale = _positions(files, m, np.union1d(plan.again, plan.drop))
        m = _append(source, files, m, plan, gen)
        m = _mask_removed(source, files, m, gen, stale, plan.check_removed)
        if len(m.segments) > MAX_SEGMENTS:
            m = _merge(files, m, 1, gen)
        # The state read first: whatever moved since is picked up by the next sync.
        m = replace(m, generation=gen, state=state)
        files.publish(m)
        files.collect(m)
        return m


def needs_optimize(m: WordManifest) -> bool:
    """Whether the segments or the mask have grown enough for a background optimisation."""
    if not m.segments:
        return False
    first = m.segments[0][2] - m.segments[0][1]
    return (m.rows - first > TAIL_SHARE * max(first, 1) and len(m.segments) > 1) or m.deleted > DELETED_SHARE * m.rows


def optimize(files: WordFiles) -> WordManifest | None:
    """One segment over the live rows (a new base without the masked ones); run in the background."""
    with files.locked(blocking=False, name="optimize.lock") as got:
        if not got:
            return None
        with files.locked():
            m = files.manifest()
            if m is None or not needs_optimize(m):
                return None
            gen = m.generation + 1
            m = _compact(files, m, gen) if m.deleted else _merge(files, m, 0, gen)
            m = replace(m, generation=gen)
            files.publish(m)
            files.collect(m)
    log.info("word index optimised: %d rows in one segment", m.rows)
    return m


def _fresh(files: WordFiles, old: WordManifest | None) -> WordManifest:
    """An empty index on a new base (files missing or damaged: the rows are read again)."""
    base = (old.base + 1) if old else 1
    for name in ("docids", *(c for c, _ in COLUMNS)):
        files.column(base, name).unlink(missing_ok=True)
    return WordManifest(base=base, generation=(old.generation if old else 0))


def _append(source, files: WordFiles, m: WordManifest, plan, gen: int) -> WordManifest:
    """Index the plan's range of new ids, then its ids to index again, as one new segment."""
    codes = files.doc_codes(m) if m.docs else {}
    parts, total_len, start, max_id = [], m.total_len, m.rows, m.max_id
    pending = [(m.max_id, plan.upto, None)] if plan.upto is not None else []
    pending += [(0, None, plan.again[i:i + _READ_CHUNK]) for i in range(0, len(plan.again), _READ_CHUNK)]
    while pending:
        after, upto, only = pending[0]
        rows = source.rows(after, upto, _READ_CHUNK, only)
        if only is not None or not len(rows["ids"]):
            pending.pop(0)
        else:
            pending[0] = (int(rows["ids"][-1]), upto, None)
            max_id = int(rows["ids"][-1])
        if not len(rows["ids"]):
            continue
        # BM25 impacts are normalised by the mean row length of the index so far (these rows' own at first).
        triples, length = source.triples(rows, m.rows, total_len / m.rows if m.rows else None)
        parts.append(triples)
        total_len += length
        m = files.append_rows(m, rows, codes)
    if m.rows > start:
        entry = files.write_segment(m.base, f"s{gen}", Segment.build(Triples.concat(parts)))
        m = replace(m, segments=[*m.segments, [entry[0], start, m.rows, *entry[1:]]])
    return replace(m, total_len=total_len, max_id=max(max_id, int(plan.again.max()) if len(plan.again) else 0))


def _positions(files: WordFiles, m: WordManifest, ids: np.ndarray) -> np.ndarray:
    """The rows of these snippet ids in a generation."""
    if not len(ids) or not m.rows:
        return _NONE
    return np.flatnonzero(np.isin(map_column(files.column(m.base, "ids"), np.int64, m.rows), ids))


def _mask_removed(source, files: WordFiles, m: WordManifest, gen: int, stale: np.ndarray,
                  check: bool) -> WordManifest:
    """Mask the stale rows and, when the source says snippets may be gone, the rows of those that are."""
    masked = np.union1d(files.deleted_positions(m), stale).astype(np.int64)
    alive = np.ones(m.rows, dtype=bool)
    alive[masked] = False
    present = source.present(m.max_id, int(alive.sum())) if check and m.rows else None
    if present is not None:
        ids = map_column(files.column(m.base, "ids"), np.int64, m.rows)
        masked = np.union1d(masked, np.flatnonzero(alive & ~np.isin(ids, present))).astype(np.int64)
    if len(masked) != m.deleted:
        np.save(files.path(f"deleted-{gen}.npy"), masked)
        m = replace(m, deleted=len(masked), deleted_gen=gen)
    return m


def _merge(files: WordFiles, m: WordManifest, first: int, gen: int) -> WordManifest:
    """Segments from `first` on merged into one."""
    merged = m.segments[first:]
    if len(merged) < 2:
        return m
    seg = Segment.build(Triples.concat([files.map_segment(m.base, e).triples() for e in merged]))
    entry = files.write_segment(m.base, f"m{gen}", seg)
    return replace(m, segments=[*m.segments[:first], [entry[0], merged[0][1], merged[-1][2], *entry[1:]]])


def _compact(files: WordFiles, m: WordManifest, gen: int) -> WordManifest:
    """A new base holding only the live rows, their postings in one segment."""
    keep = np.ones(m.rows, dtype=bool)
    keep[files.deleted_positions(m)] = False
    triples = compacted(Triples.concat([files.map_segment(m.base, e).triples() for e in m.segments]), keep)
    base = m.base + 1
    for name, dtype in COLUMNS:
        col = map_column(files.column(m.base, name), dtype, m.rows)
        append_bytes(files.column(base, name), 0, np.ascontiguousarray(col[keep]).tobytes())
    append_bytes(files.column(base, "docids"), 0, files.column(m.base, "docids").read_bytes()[:m.docs * DOCID.itemsize])
    rows = int(keep.sum())
    entry = files.write_segment(base, f"c{gen}", Segment.build(triples))
    return replace(m, base=base, rows=rows, deleted=0, deleted_gen=0, segments=[[entry[0], 0, rows, *entry[1:]]])


def _intact(files: WordFiles, m: WordManifest) -> bool:
    """Whether the columns and segments hold what the manifest says."""
    need = {files.column(m.base, name): m.rows * np.dtype(d).itemsize for name, d in COLUMNS}
    for entry in m.segments:
        need[files.column(m.base, f"{entry[0]}.rows")] = entry[4] * 4
        need[files.column(m.base, f"{entry[0]}.vocab")] = entry[3] * 8
    try:
        return all(p.stat().st_size >= size for p, size in need.items() if size)
    except OSError:
        return False


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1
