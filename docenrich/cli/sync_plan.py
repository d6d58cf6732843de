"""What `docenrich sync` has to do: which files of the folders count, and the plan that brings a
collection in line with them (add, replace, rename, touch, remove, keep), from what is on disk
and what the sync state recorded. Pure: the caller reads the disk and the store.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Files editors and office programs leave beside the real one while they save: lock files,
# swap files, backups, the probe vim writes to test a folder (4913), downloads in progress.
IGNORED_PATTERNS = ("~$*", ".*", "*~", "*.tmp", "*.temp", "*.swp", "*.swx", "*.part", "*.crdownload", "4913")
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Seen:
    """A file as a scan found it: its size and modification time."""

    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Entry:
    """What the sync state remembers of a path: its document (None if refused) and its content."""

    doc_id: str | None
    sha256: str
    size: int
    mtime_ns: int
    refused: str = ""

    def matches(self, seen: Seen) -> bool:
        """Whether the file looks untouched since it was recorded (same size and mtime)."""
        return self.size == seen.size and self.mtime_ns == seen.mtime_ns


@dataclass(frozen=True)
class Action:
    """One step of a plan.

    kind: add (a new file), replace (changed content: old_doc leaves the collection), rename
    (same content at a new path: the document stays), touch (new mtime, same content: only the
    state changes), remove (the file is gone: old_doc leaves the collection), keep (gone, kept).
    """

    kind: str
    path: str
    sha256: str = ""
    seen: Seen | None = None
    old_path: str | None = None
    old_doc: str | None = None
    reason: str = ""


@dataclass
class Plan:
    """The actions of one pass, in the order they run, and how many files were left alone."""

    actions: list[Action] = field(default_factory=list)
    unchanged: int = 0

    def count(self, kind: str) -> int:
        return sum(a.kind == kind for a in self.actions)

    def of(self, *kinds: str) -> list[Action]:
        return [a for a in self.actions if a.kind in kinds]

    @property
    def empty(self) -> bool:
        """Nothing to do but remember (touch) or report (keep)."""
        return not self.of("add", "replace", "rename", "remove")


def is_ignored(name: str) -> bool:
    """Whether a file name is an editor's or a download's temporary file (or hidden)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED_PATTERNS)


def is_candidate(name: str, extensions: Collection[str]) -> bool:
    """Whether a file of this name is synced: an accepted extension and not a temporary file."""
    return not is_ignored(name) and os.path.splitext(name)[1].lower() in extensions


def scan(root: Path, extensions: Collection[str]) -> dict[str, Seen]:
    """Every candidate file under root (sub-folders included, hidden ones not), by absolute path."""
    found: dict[str, Seen] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not is_candidate(name, extensions):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:  # gone between the listing and the stat
                continue
            if os.path.isfile(path):
                found[path] = Seen(st.st_size, st.st_mtime_ns)
    return found


def file_sha256(path: str) -> str | None:
    """The content hash of a file, or None when it is gone or cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def in_scope(path: str, roots: Iterable[str]) -> bool:
    """Whether path lies under one of the roots."""
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def make_plan(found: dict[str, Seen], known: dict[str, Entry], in_collection: Collection[str],
              hash_of: Callable[[str], str | None], keep_missing: bool = False,
              unsettled: Collection[str] = ()) -> Plan:
    """The plan that makes the collection follow the files.

    found: the files on disk; known: the state's entries for the same folders; in_collection:
    the ids of the documents the collection holds now (an entry whose document left it is added
    again); hash_of reads a file's hash (only for new or changed files); unsettled: files still
    being written, left for a later pass (neither added nor missing; no removal while there are any).
    """
    plan = Plan()
    fresh: list[Action] = []
    for path in sorted(found):
        if path in unsettled:
            continue
        seen, entry = found[path], known.get(path)
        present = entry is not None and (entry.doc_id is None or entry.doc_id in in_collection)
        if entry is not None and present and entry.matches(seen):
            plan.unchanged += 1
            continue
        digest = hash_of(path)
        if digest is None:  # vanished meanwhile: the next pass sees it gone
            continue
        if entry is None:
            fresh.append(Action("add", path, digest, seen))
        elif digest == entry.sha256 and present:
            plan.actions.append(Action("touch", path, digest, seen, old_doc=entry.doc_id))
        elif digest == entry.sha256:
            fresh.append(Action("add", path, digest, seen, reason="its document left the collection"))
        else:
            fresh.append(Action("replace", path, digest, seen, old_doc=entry.doc_id))
    missing = {p: e for p, e in known.items() if p not in found and p not in unsettled}
    renames = _renames(fresh, missing, in_collection)
    plan.actions.extend(renames)
    plan.actions.extend(a for a in fresh if a.path not in {r.path for r in renames})
    if unsettled:
        # A file still being written may be a missing one under its new name: removals wait.
        return plan
    for path in sorted(missing):
        entry = missing[path]
        if keep_missing and entry.doc_id:
            plan.actions.append(Action("keep", path, entry.sha256, old_doc=entry.doc_id, reason="--keep-missing"))
        else:
            plan.actions.append(Action("remove", path, entry.sha256, old_doc=entry.doc_id))
    return plan


def _renames(fresh: list[Action], missing: dict[str, Entry], in_collection: Collection[str]) -> list[Action]:
    """New files whose content a vanished path had: renames. Pops the matched paths off missing."""
    by_hash: dict[str, list[str]] = {}
    for path in sorted(missing):
        entry = missing[path]
        # A document that left the collection meanwhile is not kept by a rename: the file is added.
        if entry.doc_id is None or entry.doc_id in in_collection:
            by_hash.setdefault(entry.sha256, []).append(path)
    renames = []
    for action in fresh:
        if action.kind != "add" or action.reason or not by_hash.get(action.sha256):
            continue
        old = by_hash[action.sha256].pop(0)
        entry = missing.pop(old)
        renames.append(Action("rename", action.path, action.sha256, action.seen, old_path=old,
                              old_doc=entry.doc_id, reason=entry.refused))
    return renames


def describe(action: Action) -> str:
    """One line of the printed plan."""
    doc = f" ({action.old_doc})" if action.old_doc else ""
    if action.kind == "rename":
        return f"  rename   {action.old_path} -> {action.path}{doc}"
    if action.kind == "replace":
        return f"  replace  {action.path}{doc}"
    if action.kind == "keep":
        return f"  keep     {action.path}{doc}: gone, kept ({action.reason})"
    extra = f": {action.reason}" if action.reason else ""
    return f"  {action.kind:<8} {action.path}{doc if action.kind != 'add' else ''}{extra}"


def summary(plan: Plan, collection: str) -> str:
    """The plan's totals in one sentence."""
    parts = [f"{plan.count('add')} to add", f"{plan.count('replace')} to replace", f"{plan.count('rename')} renamed",
             f"{plan.count('remove')} to remove"]
    if plan.count("keep"):
        parts.append(f"{plan.count('keep')} missing but kept")
    return f"Collection {collection!r}: " + ", ".join(parts) + f", {plan.unchanged + plan.count('touch')} unchanged."
