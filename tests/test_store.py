"""Tests for store.py against a real SQLite file under tmp_path (no Redis/Celery)."""
from __future__ import annotations

import errno
import multiprocessing
import os
import sqlite3
import sys
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) does not add the root
    sys.path.insert(0, str(ROOT))

from docenrich.records import Snippet  # noqa: E402
from docenrich.storage import (  # noqa: E402
    DB_NAME,
    SCHEMA_VERSION,
    DimensionMismatch,
    StorageError,
    VectorIndex,
    sanitize_filename,
)
from docenrich.storage import SQLiteStore as Store  # noqa: E402
from docenrich.storage.sqlite import blobs as store_mod  # noqa: E402

DIM = 16


def pdf_bytes(tag: str) -> bytes:
    return f"%PDF-1.4\n% test document {tag}\n%%EOF\n".encode()


def unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def pattern_image(n: int) -> PIL.Image.Image:
    """A black/white 8x8 image spelling n in binary: distinct n give distinct images under any encoding."""
    img = PIL.Image.new("L", (8, 8), 255)
    img.putdata([0 if (n >> bit) & 1 else 255 for bit in range(64)])
    return img


def make_batch(
    doc_id: str,
    batch: int,
    n: int = 5,
    *,
    rng: np.random.Generator | None = None,
    model: str | None = "test-model",
    dim: int = DIM,
    image: int | None = None,
) -> list[Snippet]:
    """n snippets with ordinals batch*100 + i; the first one carries pattern_image(image) if asked."""
    rng = rng or np.random.default_rng(batch)
    out = []
    for i in range(n):
        out.append(
            Snippet(
                text=f"doc {doc_id} batch {batch} snippet {i}",
                image=pattern_image(image) if (image is not None and i == 0) else None,
                page=batch + 1,
                bbox=(1.0, 2.0, 3.0 + i, 4.0),
                document_id=doc_id,
                ordinal=batch * 100 + i,
                kind="figure" if (image is not None and i == 0) else "text",
                embedding=unit(rng, dim) if model else None,
                embedding_model=model,
                meta={"i": i},
            )
        )
    return out


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def st(tmp_path: Path) -> Store:
    s = Store(tmp_path / "data")
    yield s
    s.close()


# --------------------------------------------------------------------------- setup / schema


def test_database_is_wal_and_versioned(st: Store):
    conn = sqlite3.connect(st.data_dir / DB_NAME)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
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
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        Store(tmp_path)


# --------------------------------------------------------------------------- documents


def test_same_bytes_give_same_document(st: Store):
    data = pdf_bytes("same")
    first, created1 = st.add_document(data, "report.pdf")
    second, created2 = st.add_document(data, "other-name.pdf")
    assert created1 is True and created2 is False
    assert first.id == second.id == first.sha256[:16]
    assert second.filename == "report.pdf"
    assert len(st.list_documents()) == 1
    assert files_in(st.data_dir / "pdfs") == [f"{first.sha256}.pdf"]
    assert st.pdf_path(first.id).read_bytes() == data
    other, created3 = st.add_document(pdf_bytes("different"), "x.pdf")
    assert created3 and other.id != first.id
    assert [d.id for d in st.list_documents()] == [other.id, first.id]  # newest first


def test_failed_document_is_reset_on_reupload(st: Store):
    data = pdf_bytes("retry")
    doc, _ = st.add_document(data, "r.pdf")
    st.begin_batches(doc.id, 2)
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, image=1))
    st.update_document(doc.id, state="failed", error="The PDF could not be read.")
    again, created = st.add_document(data, "r.pdf")
    assert created is True
    assert again.state == "queued" and again.error is None
    assert again.snippet_count == 0 and again.batches_total is None and again.batches_done == 0
    assert st.snippets(doc.id) == [] and st.done_batches(doc.id) == set()
    assert files_in(st.data_dir / "images") == []
    assert st.embedder_counts() == {}


def test_add_document_records_info(st: Store):
    info = store_mod_info(page_count=7, title="T", producer="P", has_text_layer=False, metadata={"a": 1})
    doc, _ = st.add_document(pdf_bytes("info"), "i.pdf", info)
    assert (doc.pages, doc.title, doc.producer, doc.has_text_layer, doc.metadata) == (7, "T", "P", False, {"a": 1})
    assert doc.to_dict()["metadata"] == {"a": 1}


def store_mod_info(**kw):
    from docenrich.pdf import DocumentInfo

    return DocumentInfo(**kw)


def test_empty_upload_rejected(st: Store):
    with pytest.raises(ValueError):
        st.add_document(b"", "e.pdf")
    assert st.list_documents() == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\bob\\Q3 report.pdf", "Q3 report.pdf"),
        ("evil\x00name\x1b[31m.pdf", "evilname[31m.pdf"),
        ("line\nbreak\t.pdf", "line break .pdf"),
        ("spoof\u202egpj.pdf", "spoofgpj.pdf"),
        ("..", "document.pdf"),
        ("", "document.pdf"),
        (None, "document.pdf"),
        ("dir/", "document.pdf"),
    ],
)
def test_filename_sanitising(raw, expected):
    assert sanitize_filename(raw) == expected


def test_long_filename_capped_keeping_extension(st: Store):
    name = sanitize_filename("a" * 500 + ".pdf")
    assert len(name) == 200 and name.endswith(".pdf")
    doc, _ = st.add_document(pdf_bytes("long"), "x/" * 10 + "b" * 300)
    assert len(doc.filename) == 200 and "/" not in doc.filename


def test_update_document(st: Store):
    doc, _ = st.add_document(pdf_bytes("u"), "u.pdf")
    updated = st.update_document(doc.id, state="extracting", stage="Extracting pages 1–8 of 20", progress=1.7)
    assert updated.state == "extracting" and updated.stage.startswith("Extracting") and updated.progress == 1.0
    assert updated.updated_at >= doc.updated_at
    assert st.get_document(doc.id).stage == "Extracting pages 1–8 of 20"
    with pytest.raises(ValueError):
        st.update_document(doc.id, state="exploded")
    with pytest.raises(TypeError):
        st.update_document(doc.id, snippet_count=99)
    assert st.delete_document(doc.id)
    assert st.update_document(doc.id, stage="late") is None
    assert st.get_document(doc.id) is None


def test_unfinished_and_queued_count(st: Store):
    a, _ = st.add_document(pdf_bytes("q1"), "1.pdf")
    b, _ = st.add_document(pdf_bytes("q2"), "2.pdf")
    c, _ = st.add_document(pdf_bytes("q3"), "3.pdf")
    st.update_document(b.id, state="ready")
    st.update_document(c.id, state="failed", error="boom")
    assert st.queued_count() == 1
    assert [d.id for d in st.unfinished_documents()] == [a.id]
    assert st.unfinished_documents(older_than=3600) == []


def test_threads_share_store(st: Store):
    doc, _ = st.add_document(pdf_bytes("threads"), "t.pdf")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                st.update_document(doc.id, stage=f"thread {n} step {i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert st.get_document(doc.id).stage.endswith("step 19")


def test_finished_threads_do_not_leak_connections(st: Store):
    doc, _ = st.add_document(pdf_bytes("leak"), "l.pdf")
    for _ in range(30):  # like Flask's threaded server: one short-lived thread per request
        t = threading.Thread(target=st.get_document, args=(doc.id,))
        t.start()
        t.join()
    st.get_document(doc.id)
    assert len(st._conns) <= 2


def _forked_child(st: Store, doc_id: str) -> None:
    st.update_document(doc_id, stage="from the child")
    os._exit(0)


def test_store_survives_fork(st: Store):
    doc, _ = st.add_document(pdf_bytes("fork"), "f.pdf")  # parent connection is open
    proc = multiprocessing.get_context("fork").Process(target=_forked_child, args=(st, doc.id))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert st.get_document(doc.id).stage == "from the child"
    assert st.update_document(doc.id, stage="parent again").stage == "parent again"


# --------------------------------------------------------------------------- batches


def test_save_batch_is_idempotent(st: Store):
    doc, _ = st.add_document(pdf_bytes("idem"), "i.pdf")
    st.begin_batches(doc.id, 3)
    st.begin_batches(doc.id, 3)  # idempotent
    batch = make_batch(doc.id, 0, n=4, image=2)
    first = st.save_batch(doc.id, 0, batch)
    ids_before = [s.id for s in st.snippets(doc.id)]
    version = st.vectors_version()
    second = st.save_batch(doc.id, 0, batch)
    assert first.snippet_count == second.snippet_count == 4
    assert [s.id for s in st.snippets(doc.id)] == ids_before
    assert st.embedder_counts() == {"test-model": 4}
    assert st.vectors_version() == version  # identical vectors: nothing changed
    assert second.batches_done == 1 and st.done_batches(doc.id) == {0}
    assert len(files_in(st.data_dir / "images")) == 1


def test_resaved_batch_updates_in_place(st: Store):
    doc, _ = st.add_document(pdf_bytes("resave"), "s.pdf")
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=5, image=3))
    ids = [r.id for r in st.snippets(doc.id)]
    idx = VectorIndex(st, "test-model")
    idx.refresh()
    changed = make_batch(doc.id, 0, n=3, rng=np.random.default_rng(99))  # new vectors, no image
    changed[1].text = "changed text"
    changed[0].embedding = None  # its image changed and no new vector came: the old one is stale
    saved = st.save_batch(doc.id, 0, changed)
    rows = st.snippets(doc.id)
    assert saved.snippet_count == 5 and [r.id for r in rows] == ids  # upsert: same rows, none lost
    assert rows[1].text == "changed text" and rows[0].image_path is None
    assert files_in(st.data_dir / "images") == []  # the replaced image was collected
    assert st.embedder_counts() == {"test-model": 4} and not rows[0].has_vector
    idx.refresh()  # replaced vectors: the index must not keep the old ones
    assert len(idx) == 4
    hit = idx.search(changed[2].embedding, 1)
    assert hit[0][0] == rows[2].id and hit[0][1] == pytest.approx(1.0, abs=1e-5)


def test_empty_resave_rechecks_without_losing_data(st: Store):
    doc, _ = st.add_document(pdf_bytes("recheck"), "r.pdf")
    st.begin_batches(doc.id, 2)
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=4))
    st.save_batch(doc.id, 1, make_batch(doc.id, 1, n=4))
    st.update_document(doc.id, state="embedding", stage="late status write")  # a slower task, after ready
    d = st.get_document(doc.id)
    assert d.state == "ready" and d.stage == "Ready" and d.progress == 1.0
    d = st.save_batch(doc.id, 1, [])  # the worker's "re-check completion" call
    assert d.state == "ready" and d.snippet_count == 8 and st.embedder_counts() == {"test-model": 8}
    # ready -> failed is not a legal move (a late error of a finished run must not fail it);
    # ready -> queued (a new run) is.
    assert st.update_document(doc.id, state="failed", error="x").state == "ready"
    assert st.update_document(doc.id, state="queued").state == "queued"
    assert st.update_document(doc.id, state="failed", error="x").state == "failed"  # failing still works


def test_ready_when_all_batches_in(st: Store):
    doc, _ = st.add_document(pdf_bytes("ready"), "r.pdf")
    st.update_document(doc.id, state="embedding")
    st.begin_batches(doc.id, 3)
    d = st.save_batch(doc.id, 2, make_batch(doc.id, 2))
    assert d.state == "embedding" and d.batches_done == 1 and d.progress == pytest.approx(1 / 3)
    d = st.save_batch(doc.id, 0, make_batch(doc.id, 0))
    assert d.state == "embedding" and d.progress == pytest.approx(2 / 3)
    assert st.done_batches(doc.id) == {0, 2}
    d = st.save_batch(doc.id, 1, make_batch(doc.id, 1))
    assert d.state == "ready" and d.progress == 1.0 and d.batches_done == 3 and d.snippet_count == 15
    assert d.embedder == "test-model"
    assert st.queued_count() == 0
    with pytest.raises(ValueError):
        st.save_batch(doc.id, 3, make_batch(doc.id, 3))


def test_zero_batches_is_ready_immediately(st: Store):
    doc, _ = st.add_document(pdf_bytes("empty"), "e.pdf")
    st.begin_batches(doc.id, 0)
    assert st.get_document(doc.id).state == "ready"


def test_changed_batch_total_restarts(st: Store):
    doc, _ = st.add_document(pdf_bytes("renum"), "n.pdf")
    st.begin_batches(doc.id, 4)
    st.save_batch(doc.id, 0, make_batch(doc.id, 0))
    st.begin_batches(doc.id, 2)
    d = st.get_document(doc.id)
    assert d.batches_total == 2 and d.batches_done == 0 and d.snippet_count == 0
    assert st.done_batches(doc.id) == set()


def test_save_batch_for_deleted_document(st: Store):
    doc, _ = st.add_document(pdf_bytes("gone"), "g.pdf")
    st.delete_document(doc.id)
    assert st.save_batch(doc.id, 0, make_batch(doc.id, 0, image=4)) is None
    assert files_in(st.data_dir / "images") == []
    assert st.embedder_counts() == {}


def test_save_batch_validates_input(st: Store):
    doc, _ = st.add_document(pdf_bytes("valid"), "v.pdf")
    dup = make_batch(doc.id, 0, n=2)
    dup[1].ordinal = dup[0].ordinal
    with pytest.raises(ValueError, match="duplicate"):
        st.save_batch(doc.id, 0, dup)
    no_model = make_batch(doc.id, 0, n=1)
    no_model[0].embedding_model = None
    with pytest.raises(ValueError, match="embedding_model"):
        st.save_batch(doc.id, 0, no_model)
    nan = make_batch(doc.id, 0, n=1)
    nan[0].embedding[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        st.save_batch(doc.id, 0, nan)
    assert st.get_document(doc.id).snippet_count == 0


# --------------------------------------------------------------------------- deletion


def test_delete_removes_rows_files_and_vectors(st: Store):
    a, _ = st.add_document(pdf_bytes("del-a"), "a.pdf")
    b, _ = st.add_document(pdf_bytes("del-b"), "b.pdf")
    shared = 0xF0F0
    st.save_batch(a.id, 0, make_batch(a.id, 0, image=shared, rng=np.random.default_rng(1)))
    st.save_batch(a.id, 1, make_batch(a.id, 1, image=0x0F0F, rng=np.random.default_rng(2)))
    st.save_batch(b.id, 0, make_batch(b.id, 0, image=shared, rng=np.random.default_rng(3)))
    assert len(files_in(st.data_dir / "images")) == 2  # shared image stored once
    thumb = st.save_thumb(a.id, 1, b"\x89PNG fake")
    assert thumb.read_bytes() == b"\x89PNG fake"

    idx = VectorIndex(st, "test-model")
    idx.refresh()
    assert len(idx) == 15
    a_ids = {s.id for s in st.snippets(a.id)}
    a_images = {s.image_path for s in st.snippets(a.id) if s.image_path}
    b_image = next(s.image_path for s in st.snippets(b.id) if s.image_path)
    version = st.vectors_version()

    assert st.delete_document(a.id) is True
    assert st.delete_document(a.id) is False
    assert st.get_document(a.id) is None
    assert st.snippets(a.id) == [] and st.done_batches(a.id) == set()
    assert all(st.get_snippet(i) is None for i in a_ids)
    assert list(st.export_rows(a.id)) == []
    assert not (st.data_dir / "pdfs" / f"{a.sha256}.pdf").exists()
    assert (st.data_dir / "pdfs" / f"{b.sha256}.pdf").exists()
    assert files_in(st.data_dir / "images") == [b_image]  # shared kept, a's own removed
    assert b_image in a_images
    assert not thumb.exists()
    assert st.embedder_counts() == {"test-model": 5}
    assert st.vectors_version() > version

    idx.refresh()
    assert len(idx) == 5
    hits = idx.search(np.ones(DIM, dtype=np.float32), 15)
    assert len(hits) == 5 and not ({h[0] for h in hits} & a_ids)

    st.delete_document(b.id)
    assert files_in(st.data_dir / "images") == []
    assert files_in(st.data_dir / "pdfs") == []
    idx.refresh()
    assert len(idx) == 0 and idx.search(np.ones(DIM), 3) == []


# --------------------------------------------------------------------------- storage failures


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
    conn = st._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk full" for this connection
    big = store_mod_info(page_count=1, title="x", producer="y", has_text_layer=True, metadata={"blob": "z" * 200_000})
    with pytest.raises(StorageError, match="disk is full"):
        st.add_document(pdf_bytes("dbfull"), "d.pdf", big)
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert st.list_documents() == []
    assert files_in(st.data_dir / "pdfs") == []


# --------------------------------------------------------------------------- processes


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


# --------------------------------------------------------------------------- vector index


def _fill(st: Store, n_docs: int, per_doc: int, dim: int, model: str, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = []
    for d in range(n_docs):
        doc, _ = st.add_document(pdf_bytes(f"{model}-{seed}-{d}"), f"{d}.pdf")
        ids.append(doc.id)
        for b in range(0, per_doc, 50):
            batch = make_batch(doc.id, b // 50, n=min(50, per_doc - b), rng=rng, model=model, dim=dim)
            st.save_batch(doc.id, b // 50, batch)
    return ids


def _brute(st: Store, model: str, q: np.ndarray, k: int, doc_id: str | None = None):
    ids, docs, mat, _ = st.load_vectors(model)
    if doc_id is not None:
        keep = docs == doc_id
        ids, mat = ids[keep], mat[keep]
    scores = mat @ q
    order = np.argsort(-scores)[:k]
    return ids[order], scores[order]


def test_vector_index_matches_bruteforce(st: Store):
    doc_ids = _fill(st, n_docs=3, per_doc=400, dim=DIM, model="test-model", seed=7)
    idx = VectorIndex(st, "test-model")
    idx.refresh()
    assert len(idx) == 1200 and idx.dim == DIM
    rng = np.random.default_rng(123)
    for _ in range(10):
        q = unit(rng)
        for k in (1, 10, 50):
            got = idx.search(q, k)
            want_ids, want_scores = _brute(st, "test-model", q, k)
            assert [g[0] for g in got] == want_ids.tolist()
            np.testing.assert_allclose([g[1] for g in got], want_scores, rtol=1e-5, atol=1e-6)
        for doc_id in doc_ids:
            got = idx.search(q, 7, document_id=doc_id)
            want_ids, _ = _brute(st, "test-model", q, 7, doc_id)
            assert [g[0] for g in got] == want_ids.tolist()
            assert {st.get_snippet(g[0]).document_id for g in got} == {doc_id}
    assert len(idx.search(unit(rng), 5000)) == 1200  # k larger than n
    assert idx.search(unit(rng), 5, document_id="0123456789abcdef") == []
    assert idx.search(unit(rng), 0) == []
    with pytest.raises(ValueError, match="dimensions"):
        idx.search(np.ones(DIM + 1), 3)


def test_incremental_refresh_appends(st: Store, monkeypatch: pytest.MonkeyPatch):
    _fill(st, n_docs=1, per_doc=100, dim=DIM, model="test-model", seed=1)
    idx = VectorIndex(st, "test-model")
    idx.refresh()
    assert len(idx) == 100

    def no_reload():
        raise AssertionError("inserts only: refresh must append, not reload")

    monkeypatch.setattr(idx, "_reload", no_reload)
    idx.refresh()  # nothing changed: no-op
    calls = {"n": 0}
    real_load = st._load_vectors

    def counting_load(*a, **k):
        calls["n"] += 1
        return real_load(*a, **k)

    monkeypatch.setattr(st, "_load_vectors", counting_load)
    idx.refresh()
    assert calls["n"] == 0  # unchanged version: not even a query
    new_docs = _fill(st, n_docs=2, per_doc=1100, dim=DIM, model="test-model", seed=2)  # forces buffer growth
    for _ in range(2):
        idx.refresh()
    assert len(idx) == 2300 and calls["n"] == 1
    newest = st.snippets(new_docs[1])[-1]
    vec = next(r["embedding"] for r in st.export_rows(new_docs[1]) if r["snippet_id"] == newest.id)
    assert idx.search(np.array(vec, dtype=np.float32), 1, document_id=new_docs[1])[0][0] == newest.id
    q = unit(np.random.default_rng(5))
    want_ids, _ = _brute(st, "test-model", q, 20)
    assert [h[0] for h in idx.search(q, 20)] == want_ids.tolist()

    monkeypatch.undo()
    st.delete_document(new_docs[0])
    idx.refresh()  # a removal: full reload
    assert len(idx) == 1200


def test_embedder_isolation_and_dimension_check(st: Store):
    doc, _ = st.add_document(pdf_bytes("iso"), "iso.pdf")
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=4, model="small", dim=8))
    st.save_batch(doc.id, 1, make_batch(doc.id, 1, n=6, model="large", dim=32))
    small, large = VectorIndex(st, "small"), VectorIndex(st, "large")
    small.refresh()
    large.refresh()
    assert (len(small), small.dim, len(large), large.dim) == (4, 8, 6, 32)
    small_ids = {s.id for s in st.snippets(doc.id) if s.ordinal < 100}
    assert {h[0] for h in small.search(np.ones(8), 10)} == small_ids
    assert not ({h[0] for h in large.search(np.ones(32), 10)} & small_ids)
    with pytest.raises(ValueError):
        small.search(np.ones(32), 3)
    with pytest.raises(DimensionMismatch, match="8-dimensional"):
        st.save_batch(doc.id, 2, make_batch(doc.id, 2, n=2, model="small", dim=16))
    assert st.done_batches(doc.id) == {0, 1}  # the failed batch left nothing
    assert st.embedder_counts() == {"large": 6, "small": 4}
    assert st.embedder_dims() == {"large": 32, "small": 8}
    assert VectorIndex(st, "nobody").search(np.ones(8), 3) == []


def test_reembedding_flow(st: Store):
    doc, _ = st.add_document(pdf_bytes("reembed"), "r.pdf")
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=5))
    st.save_batch(doc.id, 1, make_batch(doc.id, 1, n=3, model=None))
    todo = st.snippets_needing_vectors("test-model", 100)
    assert sorted(s.ordinal for s in todo) == [100, 101, 102]
    assert all(isinstance(s, Snippet) and s.text and s.document_id == doc.id for s in todo)
    todo_new = st.snippets_needing_vectors("new-model", 3)
    assert len(todo_new) == 3
    rest = st.snippets_needing_vectors("new-model", 100, after_id=todo_new[-1].meta["snippet_id"])
    assert len(rest) == 5
    idx = VectorIndex(st, "new-model")
    idx.refresh()
    assert len(idx) == 0
    version = st.vectors_version()
    rng = np.random.default_rng(0)
    items = [(s.meta["snippet_id"], unit(rng, 24)) for s in todo_new + rest]
    st.save_vectors(items + [(999_999, unit(rng, 24))], "new-model")  # 999_999: no such snippet, skipped
    assert st.vectors_version() > version
    assert st.snippets_needing_vectors("new-model", 100) == []
    assert st.embedder_counts() == {"new-model": 8, "test-model": 5}
    idx.refresh()
    assert len(idx) == 8
    with pytest.raises(DimensionMismatch):
        st.save_vectors([(todo[0].meta["snippet_id"], unit(rng, 12))], "new-model")
    assert st.delete_vectors("new-model") == 8
    idx.refresh()
    assert len(idx) == 0


def test_export_rows(st: Store):
    doc, _ = st.add_document(pdf_bytes("export"), "e.pdf")
    batch = make_batch(doc.id, 0, n=3)
    st.save_batch(doc.id, 0, batch)
    rows = list(st.export_rows(doc.id))
    assert [r["ordinal"] for r in rows] == [0, 1, 2]
    assert rows[1]["text"] == batch[1].text and rows[1]["bbox"] == [1.0, 2.0, 4.0, 4.0]
    assert rows[0]["embedder"] == "test-model"
    np.testing.assert_allclose(rows[2]["embedding"], batch[2].embedding)
    snip = st.get_snippet(rows[0]["snippet_id"])
    assert snip.to_dict()["bbox"] == [1.0, 2.0, 3.0, 4.0] and snip.has_vector and snip.meta == {"i": 0}
    extra = make_batch(doc.id, 1, n=1)
    extra[0].meta = {"score": np.float32(0.5), "v": np.arange(2)}
    st.save_batch(doc.id, 1, extra)
    assert st.snippets(doc.id)[-1].meta == {"score": 0.5, "v": [0, 1]}
    assert [s.ordinal for s in st.snippets(doc.id, limit=2, offset=1)] == [1, 2]
    assert [s.id for s in st.get_snippets([rows[2]["snippet_id"], rows[0]["snippet_id"], 123456])] == [
        rows[2]["snippet_id"],
        rows[0]["snippet_id"],
    ]


# --------------------------------------------------------------------------- paths


def test_image_file_refuses_traversal(st: Store):
    doc, _ = st.add_document(pdf_bytes("img"), "img.pdf")
    batch = make_batch(doc.id, 0, n=1, image=1)
    st.save_batch(doc.id, 0, batch)
    name = st.snippets(doc.id)[0].image_path
    path = st.image_file(name)
    assert path is not None and path.parent == st.data_dir / "images"
    assert path.read_bytes() == batch[0].image_bytes()[0]
    (st.data_dir / "secret").write_text("x")
    bad_names = ("../x", "../secret", "../" + name, name.upper(), name + "/..", "/etc/passwd", "", name[:-4])
    for bad in bad_names + ("a" * 64 + ".exe", None, 42):
        assert st.image_file(bad) is None, bad
    assert st.image_file("0" * 64 + ".png") is None  # well-formed but absent


def test_thumb_and_pdf_paths_validate_ids(st: Store):
    doc, _ = st.add_document(pdf_bytes("thumb"), "t.pdf")
    path = st.thumb_path(doc.id, 3)
    assert path.parent == st.data_dir / "thumbs" / doc.id and path.parent.is_dir()
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
