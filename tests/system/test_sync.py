"""`docenrich sync`: a collection that follows a folder, as a subprocess against a stack of its
own (Redis, a worker, the store): one pass, then --watch through adds, changes, an editor's save,
a file written slowly, a rename and a delete, each followed within 5 s."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.env import ROOT, TEST_ENV
from tests.helpers.pdfs import pdf_with_text
from tests.helpers.wait import wait_for

FOLLOW_SECONDS = 5.0


def sync_cli(stack, *args: str, out=None) -> subprocess.Popen:
    """`docenrich sync …` (through the module, as the console script runs it) on the stack."""
    env = {**os.environ, **TEST_ENV, **stack.env}
    return subprocess.Popen([sys.executable, "-m", "docenrich.cli.main", "sync", *args], cwd=ROOT, env=env,
                            stdout=out or subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def members(stack, collection: str) -> set[str]:
    return stack.store.collection_document_ids([collection])


def state_of(stack, collection: str) -> dict[str, str | None]:
    """path -> document id, as the sync state file records it."""
    path = stack.data_dir / "sync" / f"{collection}.json"
    return {p: e["doc_id"] for p, e in json.loads(path.read_text())["files"].items()} if path.exists() else {}


def follows(stack, collection: str, expected, what: str, since: float) -> None:
    """Wait until the collection holds exactly `expected()` (ids) and say how long it took."""
    wait_for(lambda: members(stack, collection) == expected(), 30, 0.1, what)
    took = time.monotonic() - since
    assert took <= FOLLOW_SECONDS, f"{what} took {took:.1f}s"


def doc_id(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.slow
def test_sync_once_then_again_redoes_nothing_and_dry_run_changes_nothing(make_stack, tmp_path):
    stack = make_stack()
    stack.worker("sync-once")
    folder = tmp_path / "papers"
    (folder / "sub").mkdir(parents=True)
    a, b = pdf_with_text("Harbour pilots guide the ships in."), pdf_with_text("Tide tables for the northern coast.")
    (folder / "a.pdf").write_bytes(a)
    (folder / "sub" / "b.pdf").write_bytes(b)
    (folder / "locked.pdf").write_text("not a PDF at all")
    (folder / "~$a.pdf").write_bytes(a[:50])

    dry = sync_cli(stack, str(folder), "-c", "papers", "--dry-run")
    out, _ = dry.communicate(timeout=120)
    assert dry.returncode == 0, out
    assert "3 to add" in out and f"add      {folder / 'a.pdf'}" in out and "~$" not in out
    assert members(stack, "papers") == set()

    first = sync_cli(stack, str(folder), "-c", "papers")
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 1, out  # locked.pdf is refused, and the exit status says so
    assert "Done: 2 added, 0 already stored, 1 refused" in out and "overall [" in out
    assert members(stack, "papers") == {doc_id(a), doc_id(b)}

    again = sync_cli(stack, str(folder), "-c", "papers")
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out
    assert "0 to add, 0 to replace, 0 renamed, 0 to remove, 3 unchanged" in out, out

    (folder / "sub" / "b.pdf").unlink()
    kept = sync_cli(stack, str(folder), "-c", "papers", "--keep-missing")
    out, _ = kept.communicate(timeout=120)
    assert "gone, kept" in out and members(stack, "papers") == {doc_id(a), doc_id(b)}
    removed = sync_cli(stack, str(folder), "-c", "papers")
    out, _ = removed.communicate(timeout=120)
    assert "1 to remove" in out and members(stack, "papers") == {doc_id(a)}
    assert stack.store.get_document(doc_id(b)) is None, "a document of no other collection is deleted"


def slow_write(path, data: bytes, pause: float) -> None:
    """Write half the file, pause longer than the debounce, then the rest (a slow copy)."""
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        time.sleep(pause)
        handle.write(data[len(data) // 2:])


@pytest.mark.slow
def test_sync_watch_follows_a_folder_within_five_seconds(make_stack, tmp_path):
    stack = make_stack()
    stack.worker("sync-watch")
    folder = tmp_path / "watched"
    folder.mkdir()
    a1 = pdf_with_text("Lighthouse keepers logged every passing ship.")
    (folder / "a.pdf").write_bytes(a1)
    log_path = tmp_path / "watch.log"
    with open(log_path, "w") as log:
        proc = sync_cli(stack, str(folder), "--collection", "watched", "--watch", out=log)
    expected: set[str] = {doc_id(a1)}
    try:
        # The first pass includes the command's start (imports, the app): not timed.
        wait_for(lambda: members(stack, "watched") == expected, 60, 0.1, "the first pass")

        b = pdf_with_text("Fishing boats return before the storm.")
        since = time.monotonic()
        (folder / "b.pdf").write_bytes(b)
        expected = {doc_id(a1), doc_id(b)}
        follows(stack, "watched", lambda: expected, "an added file", since)

        # An editor's save: a swap file, vim's probe, an office lock, a temporary file renamed over a.pdf.
        a2 = pdf_with_text("Lighthouse keepers logged every passing ship, and the weather.")
        since = time.monotonic()
        for junk in (".a.pdf.swp", "4913", "~$a.pdf", ".#a.pdf"):
            (folder / junk).write_bytes(b"%PDF-1.4 partial")
        (folder / "a.pdf.tmp").write_bytes(a2)
        os.replace(folder / "a.pdf.tmp", folder / "a.pdf")
        expected = {doc_id(a2), doc_id(b)}
        follows(stack, "watched", lambda: expected, "a changed file", since)
        assert stack.store.get_document(doc_id(a1)) is None, "the old content's document is gone"
        for junk in (".a.pdf.swp", "4913", "~$a.pdf", ".#a.pdf"):
            (folder / junk).unlink()

        c = pdf_with_text("Harbour masters keep the tide tables.")
        slow_write(folder / "c.pdf", c, pause=2.0)
        since = time.monotonic()
        expected = {doc_id(a2), doc_id(b), doc_id(c)}
        follows(stack, "watched", lambda: expected, "a file written slowly", since)

        since = time.monotonic()
        os.rename(folder / "b.pdf", folder / "renamed.pdf")
        wait_for(lambda: str(folder / "renamed.pdf") in state_of(stack, "watched"), 30, 0.1, "the rename")
        assert time.monotonic() - since <= FOLLOW_SECONDS
        assert state_of(stack, "watched")[str(folder / "renamed.pdf")] == doc_id(b), "a rename keeps the document"
        assert members(stack, "watched") == expected

        since = time.monotonic()
        (folder / "a.pdf").unlink()
        expected = {doc_id(b), doc_id(c)}
        follows(stack, "watched", lambda: expected, "a deleted file", since)
        # The document leaves first, then the state forgets the path (so an interruption between them redoes it).
        wait_for(lambda: set(state_of(stack, "watched")) == {str(folder / "renamed.pdf"), str(folder / "c.pdf")},
                 5, 0.1, "the state to forget the deleted file")

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log_path.read_text()
    # Neither a half-written file nor an editor's file was ever tried.
    assert "  refused  " not in text and re.search(r"[1-9]\d* refused", text) is None, text
    assert f"rename   {folder / 'b.pdf'} -> {folder / 'renamed.pdf'}" in text, text
    assert "Stopped watching." in text
