"""What only the SQLite backend has: WAL and schema versions, files on disk, disk-full handling."""
from __future__ import annotations

import errno
import multiprocessing
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from docenrich.storage import DB_NAME, StorageError, schema_head
from docenrich.storage import SQLiteStore as Store
from docenrich.storage.sqlite import blobs as store_mod
from tests.storeutil import document_info, files_in, make_batch, pdf_bytes, run_sql


@pytest.fixture
def st(tmp_path: Path) -> Store:
    s = Store(tmp_path / "data")
    yield s
    s.close()


def test_database_is_wal_and_versioned(st: Store):
    conn = sqlite3.connect(st.data_dir / DB_NAME)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == schema_head()
    finally:
        conn.close()
    for sub in ("pdfs", "images", "thumbs"):
        assert (st.data_dir / sub).is_dir()
    # Reopening an up-to-date database keeps the data.
    doc, _ = st.add_document(pdf_bytes("a"), "a.pdf")
    again = Store(st.data_dir)
    assert again.get_document(doc.id) is not None
    again.close()


def test_newer_schema_is_refused(tmp_path: Path):
    Store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        Store(tmp_path)


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_on_upload_leaves_nothing(st: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_mod.os, "replace", _enospc)
    with pytest.raises(StorageError, match="disk is full"):
        st.add_document(pdf_bytes("full"), "f.pdf")
    monkeypatch.undo()
    assert st.list_documents() == []
    assert files_in(st.data_dir / "pdfs") == []  # no temp file either


def test_pdfs_dir_replaced_by_file_gives_storage_error(st: Store):
    pdfs = st.data_dir / "pdfs"
    pdfs.rmdir()
    pdfs.write_bytes(b"not a directory")
    with pytest.raises(StorageError) as info:
        st.add_document(pdf_bytes("nodir"), "n.pdf")
    assert "Could not save the uploaded PDF" in str(info.value)
    assert st.list_documents() == []
    assert pdfs.read_bytes() == b"not a directory"


def test_unwritable_data_dir_on_startup(tmp_path: Path):
    (tmp_path / "pdfs").write_bytes(b"")
    with pytest.raises(StorageError, match="data directory"):
        Store(tmp_path)


def test_disk_full_while_saving_images_leaves_nothing(st: Store, monkeypatch: pytest.MonkeyPatch):
    doc, _ = st.add_document(pdf_bytes("img-full"), "i.pdf")
    st.begin_batches(doc.id, 1)
    batch = make_batch(doc.id, 0, image=5)
    batch += make_batch(doc.id, 1, image=6)
    calls = {"n": 0}
    real_replace = os.replace

    def second_fails(src, dst):
        calls["n"] += 1
        if calls["n"] >= 2:
            _enospc()
        real_replace(src, dst)

    monkeypatch.setattr(store_mod.os, "replace", second_fails)
    with pytest.raises(StorageError, match="disk is full"):
        st.save_batch(doc.id, 0, batch)
    monkeypatch.undo()
    assert calls["n"] == 2  # the first image was written, then collected
    assert files_in(st.data_dir / "images") == []
    d = st.get_document(doc.id)
    assert d.snippet_count == 0 and d.batches_done == 0 and d.state == "queued"
    assert st.embedder_counts() == {}


def test_database_full_leaves_no_row_and_no_file(st: Store):
    pages = run_sql(st, "PRAGMA page_count")[0]["page_count"]

    def cap(dbapi_conn, _record):  # SQLite's own "disk full", for every connection opened from now on
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    st.close()
    sa.event.listen(st.engine, "connect", cap)
    big = document_info(page_count=1, title="x", producer="y", has_text_layer=True, metadata={"blob": "z" * 200_000})
    try:
        with pytest.raises(StorageError, match="disk is full"):
            st.add_document(pdf_bytes("dbfull"), "d.pdf", big)
    finally:
        sa.event.remove(st.engine, "connect", cap)
        st.close()
    assert st.list_documents() == []
    assert files_in(st.data_dir / "pdfs") == []


def _process_worker(data_dir: str, tag: str, n_batches: int, start) -> None:
    s = Store(data_dir)
    doc, _ = s.add_document(pdf_bytes(tag), f"{tag}.pdf")
    s.begin_batches(doc.id, n_batches)
    start.wait(120)  # a Barrier: both processes start writing together
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    for b in range(n_batches):
        s.update_document(doc.id, state="embedding", stage=f"batch {b}")
        s.save_batch(doc.id, b, make_batch(doc.id, b, n=8, rng=rng, image=b + 1))
    s.close()


def test_two_processes_write_at_once(tmp_path: Path):
    Store(tmp_path).close()  # schema exists before the race, as in production
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    n_batches = 40
    procs = [
        ctx.Process(target=_process_worker, args=(str(tmp_path), tag, n_batches, start)) for tag in ("p1", "p2")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0]
    s = Store(tmp_path)
    docs = s.list_documents()
    assert len(docs) == 2
    for d in docs:
        assert d.state == "ready" and d.batches_done == n_batches and d.snippet_count == n_batches * 8
    assert s.embedder_counts() == {"test-model": 2 * n_batches * 8}
    assert len(files_in(tmp_path / "images")) == n_batches  # same colours in both docs: shared
    s.close()
    # The writes really interleaved: each process committed batches while the other was busy.
    conn = sqlite3.connect(tmp_path / DB_NAME)
    spans = conn.execute("SELECT min(done_at), max(done_at) FROM batches GROUP BY document_id").fetchall()
    conn.close()
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1


def test_image_bytes_refuses_traversal(st: Store):
    doc, _ = st.add_document(pdf_bytes("img"), "img.pdf")
    batch = make_batch(doc.id, 0, n=1, image=1)
    st.save_batch(doc.id, 0, batch)
    name = st.snippets(doc.id)[0].image_path
    assert (st.data_dir / "images" / name).is_file()
    assert st.image_bytes(name) == batch[0].image_bytes()[0]
    (st.data_dir / "secret").write_text("x")
    bad_names = ("../x", "../secret", "../" + name, name.upper(), name + "/..", "/etc/passwd", "", name[:-4])
    for bad in bad_names + ("a" * 64 + ".exe", None, 42):
        assert st.image_bytes(bad) is None, bad
    assert st.image_bytes("0" * 64 + ".png") is None  # well-formed but absent


def test_thumb_and_pdf_paths_validate_ids(st: Store):
    doc, _ = st.add_document(pdf_bytes("thumb"), "t.pdf")
    path = st.thumb_path(doc.id, 3)
    assert path.parent == st.data_dir / "thumbs" / doc.id and st.thumb_bytes(doc.id, 3) is None
    assert st.thumb_path(doc.id, 3, width=300) != path
    assert st.save_thumb(doc.id, 3, b"png-bytes") == path and path.read_bytes() == b"png-bytes"
    with pytest.raises(ValueError):
        st.thumb_path("../../etc", 1)
    with pytest.raises(ValueError):
        st.thumb_path(doc.id, 0)
    with pytest.raises(KeyError):
        st.pdf_path("0123456789abcdef")
    with pytest.raises(ValueError):
        st.pdf_path("../x")
