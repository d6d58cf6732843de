"""`docenrich sync`'s plan (pure): which files count, and what a pass does with new, changed,
touched, renamed, deleted and half-written files; the sync state written atomically."""
from __future__ import annotations

import json
import os

import pytest

from docenrich.cli.sync_plan import (
    Entry,
    Seen,
    describe,
    in_scope,
    is_candidate,
    make_plan,
    scan,
    summary,
)
from docenrich.cli.sync_state import SyncBusy, SyncState
from docenrich.cli.sync_watch import unsettled

PDF = (".pdf",)


def entry(doc: str | None, sha: str, size: int = 10, mtime: int = 1, refused: str = "") -> Entry:
    return Entry(doc, sha, size, mtime, refused)


def plan_of(found, known, in_collection=None, hashes=None, **kw):
    hashes = hashes or {}
    in_collection = {e.doc_id for e in known.values() if e.doc_id} if in_collection is None else in_collection
    return make_plan(found, known, in_collection, lambda p: hashes.get(p), **kw)


def kinds(plan) -> list[tuple]:
    return [(a.kind, a.path) if a.kind != "rename" else (a.kind, a.old_path, a.path) for a in plan.actions]


@pytest.mark.parametrize("name, taken", [
    ("report.pdf", True), ("REPORT.PDF", True), ("notes.txt", False), ("~$report.pdf", False),
    (".report.pdf.swp", False), (".#report.pdf", False), ("report.pdf.tmp", False), ("4913", False),
    ("report.pdf~", False), (".hidden.pdf", False), ("report.pdf.part", False),
])
def test_candidates_are_accepted_kinds_and_never_editor_files(name, taken):
    assert is_candidate(name, PDF) is taken


def test_the_extensions_come_from_the_upload_checks():
    from docenrich import uploads

    assert ".pdf" in uploads.accepted_extensions()
    assert all(e.startswith(".") and e == e.lower() for e in uploads.accepted_extensions())


def test_scan_walks_sub_folders_but_not_hidden_ones(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    for rel in ("a.pdf", "sub/b.pdf", ".git/c.pdf", "sub/~$d.pdf", "e.txt"):
        (tmp_path / rel).write_bytes(b"%PDF-1.4")
    found = scan(tmp_path, PDF)
    assert sorted(found) == [str(tmp_path / "a.pdf"), str(tmp_path / "sub" / "b.pdf")]
    assert found[str(tmp_path / "a.pdf")].size == 8


def test_new_files_are_added_and_known_untouched_ones_are_not_even_hashed():
    known = {"/d/a.pdf": entry("A", "ha")}
    hashes = {"/d/b.pdf": "hb"}
    plan = plan_of({"/d/a.pdf": Seen(10, 1), "/d/b.pdf": Seen(5, 2)}, known, hashes=hashes)
    assert kinds(plan) == [("add", "/d/b.pdf")] and plan.unchanged == 1
    assert plan.actions[0].sha256 == "hb" and plan.actions[0].seen == Seen(5, 2)


def test_changed_content_replaces_and_a_mere_touch_only_updates_the_state():
    known = {"/d/a.pdf": entry("A", "ha"), "/d/b.pdf": entry("B", "hb")}
    found = {"/d/a.pdf": Seen(11, 9), "/d/b.pdf": Seen(10, 9)}
    plan = plan_of(found, known, hashes={"/d/a.pdf": "ha2", "/d/b.pdf": "hb"})
    assert kinds(plan) == [("touch", "/d/b.pdf"), ("replace", "/d/a.pdf")]
    assert plan.of("replace")[0].old_doc == "A"
    assert not plan.empty and plan_of(found, known, hashes={"/d/a.pdf": "ha", "/d/b.pdf": "hb"}).empty


def test_a_renamed_file_keeps_its_document():
    known = {"/d/old.pdf": entry("A", "ha"), "/d/gone.pdf": entry("B", "hb")}
    plan = plan_of({"/d/new.pdf": Seen(10, 1)}, known, hashes={"/d/new.pdf": "ha"})
    assert kinds(plan) == [("rename", "/d/old.pdf", "/d/new.pdf"), ("remove", "/d/gone.pdf")]
    assert plan.of("rename")[0].old_doc == "A" and plan.of("remove")[0].old_doc == "B"


def test_deleted_files_are_removed_unless_kept():
    known = {"/d/a.pdf": entry("A", "ha"), "/d/refused.pdf": entry(None, "hr", refused="encrypted")}
    assert kinds(plan_of({}, known)) == [("remove", "/d/a.pdf"), ("remove", "/d/refused.pdf")]
    kept = plan_of({}, known, keep_missing=True)
    # A refused file has no document to keep: its entry is simply forgotten.
    assert kinds(kept) == [("keep", "/d/a.pdf"), ("remove", "/d/refused.pdf")] and kept.empty is False
    assert "gone, kept" in describe(kept.actions[0])


def test_a_document_that_left_the_collection_is_added_again_even_when_the_file_is_unchanged():
    known = {"/d/a.pdf": entry("A", "ha"), "/d/b.pdf": entry("B", "hb")}
    found = {"/d/a.pdf": Seen(10, 1), "/d/b.pdf": Seen(10, 1)}
    plan = plan_of(found, known, in_collection={"B"}, hashes={"/d/a.pdf": "ha"})
    assert kinds(plan) == [("add", "/d/a.pdf")] and plan.actions[0].reason and plan.unchanged == 1


def test_a_rename_does_not_revive_a_document_that_left_the_collection():
    known = {"/d/old.pdf": entry("A", "ha")}
    plan = plan_of({"/d/new.pdf": Seen(10, 1)}, known, in_collection=set(), hashes={"/d/new.pdf": "ha"})
    assert kinds(plan) == [("add", "/d/new.pdf"), ("remove", "/d/old.pdf")]


def test_refused_files_are_not_tried_again_until_they_change():
    known = {"/d/bad.pdf": entry(None, "hx", refused="encrypted")}
    assert plan_of({"/d/bad.pdf": Seen(10, 1)}, known).unchanged == 1
    plan = plan_of({"/d/bad.pdf": Seen(12, 2)}, known, hashes={"/d/bad.pdf": "hy"})
    assert kinds(plan) == [("replace", "/d/bad.pdf")] and plan.actions[0].old_doc is None


def test_two_paths_with_one_content_rename_one_to_one():
    known = {"/d/a.pdf": entry("A", "h"), "/d/b.pdf": entry("A", "h")}
    plan = plan_of({"/d/c.pdf": Seen(10, 1)}, known, hashes={"/d/c.pdf": "h"})
    assert kinds(plan) == [("rename", "/d/a.pdf", "/d/c.pdf"), ("remove", "/d/b.pdf")]


def test_unsettled_files_wait_and_hold_back_removals():
    known = {"/d/old.pdf": entry("A", "ha")}
    found = {"/d/new.pdf": Seen(10, 1), "/d/c.pdf": Seen(3, 1)}
    plan = plan_of(found, known, hashes={"/d/new.pdf": "ha", "/d/c.pdf": "hc"}, unsettled={"/d/new.pdf"})
    # new.pdf may be old.pdf under its new name: old.pdf is not removed while it settles.
    assert kinds(plan) == [("add", "/d/c.pdf")]


def test_vanished_between_scan_and_hash_is_left_for_the_next_pass():
    assert plan_of({"/d/a.pdf": Seen(1, 1)}, {}).actions == []


def test_a_file_is_settled_once_unchanged_or_old_enough():
    now = 100 * 10**9
    found = {"fresh": Seen(1, now - 10**8), "same": Seen(1, now - 10**8), "old": Seen(1, now - 5 * 10**9)}
    assert unsettled(found, {"same": Seen(1, now - 10**8)}, 1.0, now) == {"fresh"}


def test_scope_is_by_folder_not_by_prefix():
    assert in_scope("/d/a/x.pdf", ["/d/a"]) and not in_scope("/d/ab/x.pdf", ["/d/a"])


def test_summary_counts_every_kind():
    known = {"/d/a.pdf": entry("A", "ha"), "/d/b.pdf": entry("B", "hb")}
    plan = plan_of({"/d/a.pdf": Seen(10, 1), "/d/c.pdf": Seen(1, 1)}, known, hashes={"/d/c.pdf": "hc"})
    assert summary(plan, "docs") == ("Collection 'docs': 1 to add, 0 to replace, 0 renamed, 1 to remove, "
                                     "1 unchanged.")


def test_the_state_survives_is_atomic_and_one_sync_per_collection(tmp_path):
    state = SyncState(tmp_path, "papers").acquire()
    state.put("/d/a.pdf", entry("A", "ha"))
    state.put("/d/b.pdf", entry(None, "hb", refused="encrypted"))
    state.drop("/d/a.pdf")
    with pytest.raises(SyncBusy):
        SyncState(tmp_path, "papers").acquire()
    other = SyncState(tmp_path, "other").acquire()  # another collection syncs alongside
    other.release()
    state.release()
    again = SyncState(tmp_path, "papers").acquire()
    assert again.entries == {"/d/b.pdf": entry(None, "hb", refused="encrypted")}
    assert json.loads((tmp_path / "sync" / "papers.json").read_text())["collection"] == "papers"
    assert [p for p in os.listdir(tmp_path / "sync") if p.endswith(".tmp")] == []
    assert again.referenced("B") is False and again.within(["/d"]) == again.entries and again.within(["/e"]) == {}
    again.release()


def test_a_damaged_state_starts_over(tmp_path):
    (tmp_path / "sync").mkdir()
    (tmp_path / "sync" / "papers.json").write_text("{not json")
    state = SyncState(tmp_path, "papers").acquire()
    assert state.entries == {}
    state.release()
