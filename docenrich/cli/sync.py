"""`docenrich sync DIR… --collection NAME`: a collection that follows folders.

New files are added, changed ones replace their old document, renamed ones keep theirs, and
the documents of deleted files leave the collection (deleted when no other collection holds
them) unless --keep-missing. Which document each path became is kept in the sync state
(docenrich.cli.sync_state); the plan is worked out in docenrich.cli.sync_plan. With --watch it
goes on following the folders (docenrich.cli.sync_watch).
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from docenrich import uploads
from docenrich.cli.admin import require_redis, services
from docenrich.cli.ingest import Item, Run, admit_file, refresh
from docenrich.cli.progress import Progress
from docenrich.cli.sync_plan import (
    Action,
    Entry,
    Plan,
    Seen,
    describe,
    file_sha256,
    make_plan,
    scan,
    summary,
)
from docenrich.cli.sync_state import SyncBusy, SyncState
from docenrich.storage import check_collection_name

log = logging.getLogger(__name__)


def drop_document(store, doc_id: str, collection: str, cancel) -> str:
    """Take a document out of the collection, deleting it when no other collection holds it."""
    doc = store.get_document(doc_id)
    if doc is None:
        return "gone"
    others = [c for c in store.collections_of([doc_id]).get(doc_id, []) if c != collection]
    if others:
        store.remove_from_collection(doc_id, collection)
        return "left the collection"
    if not doc.finished:
        cancel(doc_id)  # its queued work is revoked rather than run for a document that is gone
    store.delete_document(doc_id)
    return "deleted"


def read_file(path: str, limits: uploads.Limits) -> tuple[bytes, Seen] | None:
    """A file's bytes (up to one past the upload limit) with the size and mtime they were read at."""
    try:
        with open(path, "rb") as handle:
            st = os.fstat(handle.fileno())
            return handle.read(limits.max_bytes + 1), Seen(st.st_size, st.st_mtime_ns)
    except OSError:
        return None


class Syncer:
    """One collection following its folders: scans, plans and applies, one pass at a time."""

    def __init__(self, store, state: SyncState, roots: list[str], limits: uploads.Limits,
                 keep_missing: bool, cancel, out=sys.stderr):
        self.store, self.state, self.roots, self.limits = store, state, roots, limits
        self.collection = state.collection
        self.keep_missing, self.cancel, self.out = keep_missing, cancel, out
        self.extensions = uploads.accepted_extensions()
        self.refused = 0
        self._gone_roots: set[str] = set()

    def live_roots(self) -> list[str]:
        """The folders that exist now; a vanished one (an unmounted disk) keeps its documents."""
        live = [r for r in self.roots if os.path.isdir(r)]
        for root in set(self.roots) - set(live) - self._gone_roots:
            click.echo(f"note: {root} is not there; its files' documents are left as they are", err=True)
        self._gone_roots = set(self.roots) - set(live)
        return live

    def scan(self) -> dict[str, Seen]:
        """The candidate files of every folder."""
        found: dict[str, Seen] = {}
        for root in self.live_roots():
            found.update(scan(Path(root), self.extensions))
        return found

    def plan(self, found: dict[str, Seen], unsettled: set[str] | frozenset[str] = frozenset()) -> Plan:
        """The plan for what the scan found, against the state and the collection as stored."""
        known = self.state.within([r for r in self.roots if r not in self._gone_roots])
        in_collection = self.store.collection_document_ids([self.collection])
        return make_plan(found, known, in_collection, file_sha256, self.keep_missing, unsettled)

    def show(self, plan: Plan) -> None:
        """Print the plan: one line per step that changes the collection, then the totals."""
        for action in plan.actions:
            if action.kind != "touch":
                click.echo(describe(action))
        click.echo(summary(plan, self.collection))

    def apply(self, plan: Plan) -> Run:
        """Carry the plan out, writing the state after each step; the files admitted as a Run."""
        for action in plan.of("rename"):
            old = self.state.entries.get(action.old_path)
            if old is not None:
                self.state.entries.pop(action.old_path)
                self.state.put(action.path, replace(old, sha256=action.sha256, size=action.seen.size,
                                                    mtime_ns=action.seen.mtime_ns))
        for action in plan.of("touch"):
            old = self.state.entries[action.path]
            self.state.put(action.path, replace(old, size=action.seen.size, mtime_ns=action.seen.mtime_ns))
        run = self._admit_all(plan.of("add", "replace"))
        for action in plan.of("remove"):
            # The document goes before the entry: interrupted in between, the next pass removes it again.
            self._drop_unless_shared(action.old_doc, action.path)
            self.state.drop(action.path)
        return run

    def _admit_all(self, actions: list[Action]) -> Run:
        run = Run([Item(Path(a.path)) for a in actions])
        if not actions:
            return run
        progress = Progress(run, self.out, False)
        try:
            for action, item in zip(actions, run.items, strict=True):
                self._admit(action, item, progress)
                refresh(self.store, run)
                progress.draw()
        except KeyboardInterrupt:
            run.interrupted = True
        progress.finish()
        if run.interrupted:
            raise KeyboardInterrupt
        return run

    def _admit(self, action: Action, item: Item, progress: Progress) -> None:
        read = read_file(action.path, self.limits)
        if read is None:
            item.outcome, item.reason = "refused", "cannot be read (gone or no permission)"
            return
        data, seen = read
        admit_file(self.store, item, self.limits, self.collection, progress.note, data=data)
        digest = hashlib.sha256(data).hexdigest()
        if item.outcome == "refused":
            entry = Entry(None, digest, seen.size, seen.mtime_ns, item.reason)
        else:
            entry = Entry(item.doc_id, digest, seen.size, seen.mtime_ns)
        if action.kind == "replace" and action.old_doc and action.old_doc != entry.doc_id:
            self._drop_unless_shared(action.old_doc, action.path)
        self.state.put(action.path, entry)

    def _drop_unless_shared(self, doc_id: str | None, path: str) -> None:
        # Two paths with the same content share one document: it stays while either is there.
        if doc_id and not self.state.referenced(doc_id, but=path):
            what = drop_document(self.store, doc_id, self.collection, self.cancel)
            log.info("document %s of %s: %s", doc_id, path, what)

    def sync_once(self, found: dict[str, Seen] | None = None,
                  unsettled: set[str] | frozenset[str] = frozenset(), always_show: bool = False) -> Plan:
        """One pass: scan, print the plan (when it changes anything), apply it, print what became of it."""
        plan = self.plan(self.scan() if found is None else found, unsettled)
        if always_show or not plan.empty:
            self.show(plan)
        if plan.empty and not plan.of("touch"):
            return plan
        run = self.apply(plan)
        self.refused += run.count("refused")
        if run.items:
            click.echo(outcome_line(run, plan))
            for item in run.items:
                if item.outcome == "refused":
                    click.echo(f"  refused  {item.path}: {item.reason}")
        return plan


def outcome_line(run: Run, plan: Plan) -> str:
    """What the admitted files became, in one sentence."""
    return (f"Done: {run.count('added') + run.count('retried')} added, {run.count('stored')} already stored, "
            f"{run.count('refused')} refused; {plan.count('replace')} replaced, {plan.count('rename')} renamed, "
            f"{plan.count('remove')} removed.")


def checked_collection(value: str) -> str:
    """The collection name, checked."""
    try:
        return check_collection_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--collection") from None


@click.command("sync")
@click.argument("folders", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, resolve_path=True))
@click.option("--collection", "-c", required=True, help="The collection that follows the folders (created if new).")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--keep-missing", is_flag=True, help="Keep the documents of files that are gone.")
@click.option("--watch", is_flag=True, help="Keep following the folders until Ctrl-C.")
@click.option("--debounce", default=1.0, show_default=True, type=click.FloatRange(0.1, 60),
              help="With --watch: seconds of quiet before a change is taken.")
@with_appcontext
def sync_command(folders: tuple[str, ...], collection: str, dry_run: bool, keep_missing: bool, watch: bool,
                 debounce: float) -> None:
    """Keep a collection in line with folders: add new files, replace changed ones, remove deleted ones.

    Files are matched by path and content hash; a renamed file keeps its document. Prints the
    plan first (--dry-run prints only the plan), then a progress bar.
    """
    collection = checked_collection(collection)
    roots = list(dict.fromkeys(folders))
    svc = services()
    state = SyncState(current_app.config["DATA_DIR"], collection)
    limits = uploads.Limits.from_config(current_app.config)
    if dry_run:
        state.entries = state.load()
        syncer = Syncer(svc.store, state, roots, limits, keep_missing, cancel=svc.cancel)
        syncer.show(syncer.plan(syncer.scan()))
        return
    require_redis()
    try:
        state.acquire()
    except SyncBusy as exc:
        raise click.ClickException(str(exc)) from None
    try:
        syncer = Syncer(svc.store, state, roots, limits, keep_missing, cancel=svc.cancel)
        if watch:
            from docenrich.cli.sync_watch import follow

            follow(syncer, debounce)
            return
        syncer.sync_once(always_show=True)
    except KeyboardInterrupt:
        click.echo("Interrupted. Run the same command again to continue: finished steps are not redone.")
        sys.exit(130)
    finally:
        state.release()
    if syncer.refused:
        sys.exit(1)
