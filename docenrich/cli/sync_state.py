"""The sync state: which document each synced file became, one JSON file per collection in
DATA_DIR/sync/, keyed by absolute path.

It lives beside the store rather than in it so that the store's schema stays the store's. Every
step rewrites it atomically (a temporary file, fsync, rename), so an interrupted sync finds what
it finished and redoes nothing. One sync per collection runs at a time: it holds a lock file
that the kernel releases when the process dies.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from docenrich.cli.locks import LockBusy, take_lock
from docenrich.cli.sync_plan import Entry, in_scope

log = logging.getLogger(__name__)

VERSION = 1


class SyncBusy(Exception):
    """Another sync of the same collection is running."""


class SyncState:
    """The path -> document entries of one collection, read once and written after each step."""

    def __init__(self, data_dir: str | Path, collection: str):
        folder = Path(data_dir) / "sync"
        self.collection = collection
        self.path = folder / f"{collection}.json"
        self.lock_path = folder / f"{collection}.lock"
        self.entries: dict[str, Entry] = {}
        self._lock = None

    def acquire(self) -> SyncState:
        """Hold the collection's sync lock and read the state; SyncBusy if another sync holds it."""
        try:
            handle = take_lock(self.lock_path)
        except LockBusy as busy:
            raise SyncBusy(f"another sync of the collection {self.collection!r} is running (pid {busy.pid})") from None
        self._lock = handle
        self.entries = self.load()
        return self

    def release(self) -> None:
        """Let go of the lock (the state file stays)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self) -> dict[str, Entry]:
        """The entries on disk (none when there is no state yet)."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Written atomically, so this is damage from outside: start over (re-adding is cheap, by hash).
            log.warning("ignoring an unreadable sync state %s: %s", self.path, exc)
            return {}
        return {path: Entry(**fields) for path, fields in (raw.get("files") or {}).items()}

    def within(self, roots: list[str]) -> dict[str, Entry]:
        """The entries of files under the given folders."""
        return {p: e for p, e in self.entries.items() if in_scope(p, roots)}

    def referenced(self, doc_id: str, but: str | None = None) -> bool:
        """Whether any path (other than `but`) still maps to this document."""
        return any(e.doc_id == doc_id for p, e in self.entries.items() if p != but)

    def put(self, path: str, entry: Entry) -> None:
        """Record a path's entry and write the state."""
        self.entries[path] = entry
        self.save()

    def drop(self, *paths: str) -> None:
        """Forget paths and write the state."""
        for path in paths:
            self.entries.pop(path, None)
        self.save()

    def save(self) -> None:
        """Write the whole state atomically: a crash leaves the old file or the new, never half of one."""
        body = {"version": VERSION, "collection": self.collection,
                "files": {p: asdict(e) for p, e in sorted(self.entries.items())}}
        fd, tmp = tempfile.mkstemp(prefix=".sync-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(body, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)

