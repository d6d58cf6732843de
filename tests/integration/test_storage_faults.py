"""Storage faults under the web app (in this process, over the session's Redis): an upload to a full
disk, to a data directory gone read-only, and after the pdfs folder became a file is refused in
words and leaves nothing behind."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.helpers.pdfs import text_pdf
from tests.helpers.web import assert_clean_error, make_app, post_files
from tests.stack import list_files


def web_client(data_dir: Path):
    """The real app (in this process) over its own DATA_DIR and the session's Redis."""
    app = make_app(DATA_DIR=str(data_dir), API_TOKEN="")
    return app, app.test_client()


@contextlib.contextmanager
def mounted(target: Path, *options: str):
    """`mount` for the duration of the block (the test is skipped where mounting is not allowed)."""
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a small or read-only filesystem")
    proc = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here: {proc.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill_disk(folder: Path) -> Path:
    """Write a file until the filesystem is full; returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            while True:
                try:
                    fh.write(bytes(size))
                except OSError:
                    break
    return filler


def stored_state(data_dir: Path) -> tuple:
    """Rows and files of a DATA_DIR, to show that a failed upload changed nothing."""
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'docenrich.sqlite3'}?mode=ro", uri=True)) as conn:
        docs = conn.execute("SELECT id, sha256, state, size FROM documents ORDER BY id").fetchall()
    files = sorted(
        (str(p.relative_to(data_dir)), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in (data_dir / "pdfs").iterdir()
    )
    return docs, files


def test_upload_to_a_full_disk_is_refused_and_leaves_nothing(redis_server, tmp_path):
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=4m", "tmpfs") as disk:
        data_dir = disk / "data"
        app, client = web_client(data_dir)
        try:
            first = text_pdf(2, seed=50)
            assert post_files(client, (first, "first.pdf")).status_code == 202
            before = stored_state(data_dir)
            filler = fill_disk(disk)

            resp = post_files(client, (text_pdf(3, seed=51), "second.pdf"))
            body = assert_clean_error(resp, 507)
            print(f"full disk: {resp.status_code} {body}")
            assert "disk is full" in body["error"], body
            assert stored_state(data_dir) == before, "no row and no file for the refused upload"
            assert not [p for p in list_files(data_dir) if p.name.endswith(".part")], "no partial file"
            assert before[1] == [(f"pdfs/{hashlib.sha256(first).hexdigest()}.pdf", hashlib.sha256(first).hexdigest())]
            listed = client.get("/api/documents").get_json()["documents"]
            assert [d["filename"] for d in listed] == ["first.pdf"]

            filler.unlink()  # space again: the same upload goes through, nothing to restart
            assert post_files(client, (text_pdf(3, seed=51), "second.pdf")).status_code == 202
        finally:
            app.extensions["docenrich"].store.close()


def test_upload_to_a_read_only_data_dir_is_refused_in_words(redis_server, tmp_path):
    data_dir = tmp_path / "data"
    app, client = web_client(data_dir)
    try:
        first = text_pdf(2, seed=52)
        assert post_files(client, (first, "first.pdf")).status_code == 202
        app.extensions["docenrich"].store.close()
        before = stored_state(data_dir)
        with mounted(data_dir, "--bind", str(data_dir)):
            # A disk that went read-only after an I/O error, as ext4 does with errors=remount-ro.
            proc = subprocess.run(["mount", "-o", "remount,bind,ro", str(data_dir)], capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")
            resp = post_files(client, (text_pdf(3, seed=53), "second.pdf"))
            body = assert_clean_error(resp, 503, 507)
            print(f"read-only data dir: {resp.status_code} {body}")
            assert "not writable" in body["error"] or "read-only" in body["error"], body
            listed = client.get("/api/documents")
            assert listed.status_code == 200 and [d["filename"] for d in listed.get_json()["documents"]] == ["first.pdf"]
            app.extensions["docenrich"].store.close()
        assert stored_state(data_dir) == before
    finally:
        app.extensions["docenrich"].store.close()


def test_upload_when_pdfs_folder_became_a_file(redis_server, tmp_path):
    data_dir = tmp_path / "data"
    app, client = web_client(data_dir)
    try:
        first = text_pdf(2, seed=54)
        assert post_files(client, (first, "first.pdf")).status_code == 202
        before = stored_state(data_dir)
        (data_dir / "pdfs").rename(data_dir / "pdfs.aside")
        (data_dir / "pdfs").write_bytes(b"not a folder")
        resp = post_files(client, (text_pdf(3, seed=55), "second.pdf"))
        body = assert_clean_error(resp, 503, 507)
        print(f"pdfs is a file: {resp.status_code} {body}")
        assert "folder" in body["error"], body
        (data_dir / "pdfs").unlink()
        (data_dir / "pdfs.aside").rename(data_dir / "pdfs")
        assert stored_state(data_dir) == before
        assert not [p for p in list_files(data_dir) if p.name.endswith(".part")]
    finally:
        app.extensions["docenrich"].store.close()
