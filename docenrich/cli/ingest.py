"""Bulk ingestion from the command line: find PDFs, admit each with the API's checks, follow them.

Files already stored (same content hash) are skipped, so an interrupted run can simply be
started again: nothing stored is sent twice, and what was queued keeps being processed by
the workers meanwhile.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from docenrich import uploads
from docenrich.records import FAILED, FINISHED_STATES, READY
from docenrich.storage import sanitize_filename
from docenrich.storage.encoding import doc_id_for

QUEUE_FULL_PAUSE = 5.0
POLL_SECONDS = 0.5


def find_files(paths: Iterable[str], recursive: bool = True) -> list[Path]:
    """Files named by paths: files as given, folders' accepted files (recursively), globs expanded."""
    extensions = uploads.accepted_extensions()
    found: dict[Path, None] = {}
    for raw in paths:
        candidates = [Path(p) for p in sorted(glob.glob(raw, recursive=True))] if glob.has_magic(raw) else [Path(raw)]
        for path in candidates:
            if path.is_dir():
                pattern = "**/*" if recursive else "*"
                for item in sorted(path.glob(pattern)):
                    if item.is_file() and item.suffix.lower() in extensions:
                        found.setdefault(item.resolve())
            else:
                found.setdefault(path.resolve() if path.exists() else path)
    return list(found)


@dataclass
class Item:
    """One file on its way: where it is, what became of it, and its document while it is processed."""

    path: Path
    outcome: str = "waiting"  # waiting, added, retried, stored, refused
    doc_id: str | None = None
    reason: str = ""
    state: str = ""
    stage: str = ""
    progress: float = 0.0


@dataclass
class Run:
    """The files of one ingest run and the totals the summary reports."""

    items: list[Item] = field(default_factory=list)
    interrupted: bool = False

    def count(self, outcome: str) -> int:
        return sum(i.outcome == outcome for i in self.items)

    def tracked(self) -> list[Item]:
        return [i for i in self.items if i.doc_id]


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so a document is never stored without being queued."""
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def read_limited(path: Path, limits: uploads.Limits) -> bytes:
    """A file's bytes, at most one byte past the upload limit (enough to refuse it)."""
    with path.open("rb") as handle:
        return handle.read(limits.max_bytes + 1)


def admit_file(store, item: Item, limits: uploads.Limits, collection: str | None, note,
               data: bytes | None = None) -> None:
    """Check and store one file (or find it stored already), waiting while the queue is full.

    data, when given, are the file's bytes as the caller already read them (and hashed them).
    """
    name = sanitize_filename(item.path.name)
    if data is None:
        try:
            data = read_limited(item.path, limits)
        except OSError as exc:
            item.outcome, item.reason = "refused", f"cannot be read: {exc.strerror or exc}"
            return
    existing = store.get_document(doc_id_for(hashlib.sha256(data).hexdigest())) if data else None
    if existing is not None and existing.state != FAILED:
        if collection:
            store.add_to_collections(existing.id, [collection])
        item.outcome, item.doc_id = "stored", existing.id
        return
    while True:
        try:
            with deferred_interrupt():
                doc, _, _ = uploads.admit(store, data, name, limits, [collection] if collection else None)
        except uploads.Refused as exc:
            if exc.code == "queue_full":
                note(f"{exc.message} Waiting…")
                time.sleep(QUEUE_FULL_PAUSE)
                continue
            # The API's message names the file; here the path already does.
            item.outcome, item.reason = "refused", exc.message.removeprefix(f"{name}: ")
            return
        item.outcome, item.doc_id = ("retried" if existing is not None else "added"), doc.id
        return


def refresh(store, run: Run) -> bool:
    """Read the state of every tracked document; True while any is unfinished."""
    busy = False
    for item in run.tracked():
        doc = store.get_document(item.doc_id)
        if doc is None:
            item.state, item.stage, item.reason = FAILED, "deleted", "the document was deleted meanwhile"
            continue
        item.state, item.stage, item.progress = doc.state, doc.stage, doc.progress
        if doc.state == FAILED:
            item.reason = doc.error or "processing failed"
        elif doc.notes:
            item.reason = "; ".join(doc.notes)
        busy = busy or doc.state not in FINISHED_STATES
    return busy


def summary(run: Run, waited: bool) -> list[str]:
    """The closing lines: totals, then every refused or failed file with its reason."""
    lines = [
        f"{len(run.items)} files: {run.count('added')} added, {run.count('retried')} retried, "
        f"{run.count('stored')} already stored, {run.count('refused')} refused"
        + (f", {run.count('waiting')} not reached" if run.count("waiting") else "") + "."
    ]
    if waited:
        ready = sum(i.state == READY for i in run.tracked())
        failed = [i for i in run.tracked() if i.state == FAILED]
        lines.append(f"Processed: {ready} ready, {len(failed)} failed, "
                     f"{len(run.tracked()) - ready - len(failed)} unfinished.")
    for item in run.items:
        if item.outcome == "refused":
            lines.append(f"  refused  {item.path}: {item.reason}")
    for item in run.tracked():
        if item.state == FAILED:
            lines.append(f"  failed   {item.path}: {item.reason}")
        elif item.state == READY and item.reason:
            lines.append(f"  partly   {item.path}: {item.reason}")
    if run.interrupted:
        lines.append("Interrupted. Run the same command again to continue: stored files are skipped.")
    return lines


def is_tty(stream) -> bool:
    """Whether stream is a terminal (progress is redrawn in place there, printed as lines elsewhere)."""
    return bool(getattr(stream, "isatty", lambda: False)())
