"""`docenrich sync --watch`: follow the folders with watchdog and sync after each quiet moment.

Events only say *that* something changed; each pass rescans the folders and plans from what is
there, so renames, editors' save dances (temporary file, rename over the original) and missed
events all end in the same state. A file counts once it is settled: unchanged since the last
scan, or last modified at least the debounce interval ago, and (where inotify reports it) not
open for writing; one still being written waits for a later pass. A full rescan also runs every
RESCAN_SECONDS, for file systems that drop events.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time

import click
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from docenrich.cli.sync_plan import Seen

log = logging.getLogger(__name__)

RESCAN_SECONDS = 60.0
RETRY_SECONDS = 5.0
# A file written to and never closed (a log, a lost event) is taken after this long all the same.
WRITE_TIMEOUT = 600.0
# Reading a file (our own hashing included) is no change.
QUIET_EVENTS = {"opened", "closed_no_write"}
# inotify says when a file written to is closed; elsewhere only the mtime rule applies.
SEES_CLOSE = sys.platform.startswith("linux")


class Changes(FileSystemEventHandler):
    """Remembers when the folders last changed, and which files are open for writing."""

    def __init__(self):
        self.changed = threading.Event()
        self.last = 0.0
        self._writing: dict[str, float] = {}
        self._lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in QUIET_EVENTS:
            return
        if SEES_CLOSE and not event.is_directory:
            self._note_writes(event)
        self.last = time.monotonic()
        self.changed.set()

    def _note_writes(self, event: FileSystemEvent) -> None:
        path = str(event.src_path)
        with self._lock:
            if event.event_type in ("created", "modified"):
                self._writing.setdefault(path, time.monotonic())
            elif event.event_type in ("closed", "deleted", "moved"):
                self._writing.pop(path, None)

    def writing(self) -> set[str]:
        """Files opened for writing and not closed yet (for at most WRITE_TIMEOUT seconds)."""
        now = time.monotonic()
        with self._lock:
            return {p for p, since in self._writing.items() if now - since < WRITE_TIMEOUT}


def unsettled(found: dict[str, Seen], previous: dict[str, Seen], settle: float, now_ns: int) -> set[str]:
    """Files that may still be being written: changed since the last scan and modified just now."""
    return {path for path, seen in found.items()
            if previous.get(path) != seen and now_ns - seen.mtime_ns < settle * 1e9}


class Follower:
    """The watch loop's schedule: when the next pass is due, and what the last scan saw."""

    def __init__(self, syncer, debounce: float):
        self.syncer, self.debounce = syncer, debounce
        self.previous: dict[str, Seen] = {}
        self.due: float | None = time.monotonic()  # the first pass at once
        self.next_rescan = time.monotonic() + RESCAN_SECONDS

    def tick(self, changes: Changes) -> None:
        """Take note of events and run a pass when one is due."""
        if changes.changed.is_set():
            changes.changed.clear()
            self.due = max(self.due or 0.0, changes.last + self.debounce)
        now = time.monotonic()
        if not ((self.due is not None and now >= self.due) or now >= self.next_rescan):
            return
        self.due, self.next_rescan = None, now + RESCAN_SECONDS
        try:
            waiting = self.one_pass(changes.writing())
        except Exception as exc:  # noqa: BLE001 - a store or Redis hiccup must not end the watch
            log.exception("sync pass failed")
            click.echo(f"error: {exc}; trying again in {RETRY_SECONDS:g}s", err=True)
            self.due = time.monotonic() + RETRY_SECONDS
            return
        if waiting:
            self.due = time.monotonic() + self.debounce

    def one_pass(self, writing: set[str] = frozenset()) -> bool:
        """Scan, sync what is settled; True when some files are still being written."""
        found = self.syncer.scan()
        busy = unsettled(found, self.previous, self.debounce, time.time_ns()) | (writing & set(found))
        self.previous = found
        self.syncer.sync_once(found, busy)
        return bool(busy)


def follow(syncer, debounce: float) -> None:
    """Sync now, then after every change, until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    previous_term = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    changes = Changes()
    observer = Observer()
    for root in syncer.live_roots():
        observer.schedule(changes, root, recursive=True)
    observer.start()
    follower = Follower(syncer, debounce)
    click.echo(f"Watching {', '.join(syncer.roots)} for the collection {syncer.collection!r}; Ctrl-C stops.")
    try:
        while not stop.is_set():
            follower.tick(changes)
            changes.changed.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        observer.stop()
        observer.join(5)
    click.echo("Stopped watching.")
