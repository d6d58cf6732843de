"""The Store contract on both backends: SQLite under tmp_path and a real PostgreSQL (pgvector).

SQLite-only behaviour (WAL, files on disk, disk-full handling) is in tests/unit/test_store_sqlite.py,
file name rules in tests/unit/test_filenames.py; the vector indexes in test_store_vectors.py;
PostgreSQL's own (HNSW, admission across processes) in test_pgvector.py.
"""
from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pytest

from docenrich.storage import Store, sanitize_filename
from tests.storeutil import (
    DIM,
    document_info,
    make_batch,
    pdf_bytes,
    stored_images,
    stored_pdfs,
    stored_thumbs,
)


@pytest.fixture
def st(any_store) -> Store:
    return any_store


def test_same_bytes_give_same_document(st: Store):
    data = pdf_bytes("same")
    first, created1 = st.add_document(data, "report.pdf")
    second, created2 = st.add_document(data, "other-name.pdf")
    assert created1 is True and created2 is False
    assert first.id == second.id == first.sha256[:16]
    assert second.filename == "report.pdf"
    assert len(st.list_documents()) == 1
    assert stored_pdfs(st) == [f"{first.sha256}.pdf"]
    assert st.pdf_bytes(first.id) == data
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
    assert stored_images(st) == []
    assert st.embedder_counts() == {}


def test_add_document_records_info(st: Store):
    info = document_info(page_count=7, title="T", producer="P", has_text_layer=False, metadata={"a": 1})
    doc, _ = st.add_document(pdf_bytes("info"), "i.pdf", info)
    assert (doc.pages, doc.title, doc.producer, doc.has_text_layer, doc.metadata) == (7, "T", "P", False, {"a": 1})
    assert doc.to_dict()["metadata"] == {"a": 1}


def test_empty_upload_rejected(st: Store):
    with pytest.raises(ValueError):
        st.add_document(b"", "e.pdf")
    assert st.list_documents() == []


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
    assert st.engine.pool.checkedout() == 0 and st.engine.pool.checkedin() <= 2


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


def test_save_batch_is_idempotent(st: Store):
    doc, _ = st.add_document(pdf_bytes("idem"), "i.pdf")
    st.begin_batches(doc.id, 3)
    st.begin_batches(doc.id, 3)  # idempotent
    batch = make_batch(doc.id, 0, n=4, image=2)
    first = st.save_batch(doc.id, 0, batch)
    ids_before = [s.id for s in st.snippets(doc.id)]
    version = st.vectors_state()[0]
    second = st.save_batch(doc.id, 0, batch)
    assert first.snippet_count == second.snippet_count == 4
    assert [s.id for s in st.snippets(doc.id)] == ids_before
    assert st.embedder_counts() == {"test-model": 4}
    assert st.vectors_state()[0] == version  # identical vectors: nothing changed
    assert second.batches_done == 1 and st.done_batches(doc.id) == {0}
    assert len(stored_images(st)) == 1


def test_resaved_batch_updates_in_place(st: Store):
    doc, _ = st.add_document(pdf_bytes("resave"), "s.pdf")
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=5, image=3))
    ids = [r.id for r in st.snippets(doc.id)]
    idx = st.vector_index("test-model")
    idx.refresh()
    changed = make_batch(doc.id, 0, n=3, rng=np.random.default_rng(99))  # new vectors, no image
    changed[1].text = "changed text"
    changed[0].embedding = None  # its image changed and no new vector came: the old one is stale
    saved = st.save_batch(doc.id, 0, changed)
    rows = st.snippets(doc.id)
    assert saved.snippet_count == 5 and [r.id for r in rows] == ids  # upsert: same rows, none lost
    assert rows[1].text == "changed text" and rows[0].image_path is None
    assert stored_images(st) == []  # the replaced image was collected
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
    assert stored_images(st) == []
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


def test_delete_removes_rows_files_and_vectors(st: Store):
    a, _ = st.add_document(pdf_bytes("del-a"), "a.pdf")
    b, _ = st.add_document(pdf_bytes("del-b"), "b.pdf")
    shared = 0xF0F0
    st.save_batch(a.id, 0, make_batch(a.id, 0, image=shared, rng=np.random.default_rng(1)))
    st.save_batch(a.id, 1, make_batch(a.id, 1, image=0x0F0F, rng=np.random.default_rng(2)))
    st.save_batch(b.id, 0, make_batch(b.id, 0, image=shared, rng=np.random.default_rng(3)))
    assert len(stored_images(st)) == 2  # shared image stored once
    st.save_thumb(a.id, 1, b"\x89PNG fake")
    assert st.thumb_bytes(a.id, 1) == b"\x89PNG fake" and stored_thumbs(st, a.id) == 1

    idx = st.vector_index("test-model")
    idx.refresh()
    assert len(idx) == 15
    a_ids = {s.id for s in st.snippets(a.id)}
    a_images = {s.image_path for s in st.snippets(a.id) if s.image_path}
    b_image = next(s.image_path for s in st.snippets(b.id) if s.image_path)
    version = st.vectors_state()[0]

    assert st.delete_document(a.id) is True
    assert st.delete_document(a.id) is False
    assert st.get_document(a.id) is None
    assert st.snippets(a.id) == [] and st.done_batches(a.id) == set()
    assert all(st.get_snippet(i) is None for i in a_ids)
    assert list(st.export_rows(a.id)) == []
    assert stored_pdfs(st) == [f"{b.sha256}.pdf"]
    assert stored_images(st) == [b_image]  # shared kept, a's own removed
    assert b_image in a_images
    assert st.thumb_bytes(a.id, 1) is None and stored_thumbs(st, a.id) == 0
    assert st.embedder_counts() == {"test-model": 5}
    assert st.vectors_state()[0] > version

    idx.refresh()
    assert len(idx) == 5
    hits = idx.search(np.ones(DIM, dtype=np.float32), 15)
    assert len(hits) == 5 and not ({h[0] for h in hits} & a_ids)

    st.delete_document(b.id)
    assert stored_images(st) == []
    assert stored_pdfs(st) == []
    idx.refresh()
    assert len(idx) == 0 and idx.search(np.ones(DIM), 3) == []


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


def test_blobs_by_bytes_validate_names_and_ids(st: Store):
    doc, _ = st.add_document(pdf_bytes("blobs"), "b.pdf")
    batch = make_batch(doc.id, 0, n=1, image=1)
    st.save_batch(doc.id, 0, batch)
    name = st.snippets(doc.id)[0].image_path
    assert st.image_bytes(name) == batch[0].image_bytes()[0]
    for bad in ("../x", "../" + name, name.upper(), name + "/..", "/etc/passwd", "", name[:-4], None, 42):
        assert st.image_bytes(bad) is None, bad
    assert st.image_bytes("0" * 64 + ".png") is None  # well-formed but absent
    assert st.thumb_bytes(doc.id, 3) is None
    st.save_thumb(doc.id, 3, b"png-bytes")
    st.save_thumb(doc.id, 3, b"wide", width=300)
    assert (st.thumb_bytes(doc.id, 3), st.thumb_bytes(doc.id, 3, 300)) == (b"png-bytes", b"wide")
    for bad_id, page in (("../../etc", 1), (doc.id, 0)):
        with pytest.raises(ValueError):
            st.thumb_bytes(bad_id, page)
    with pytest.raises(KeyError):
        st.pdf_bytes("0123456789abcdef")
    with pytest.raises(ValueError):
        st.pdf_bytes("../x")


def test_images_drawn_later_fill_only_snippets_without_one(st: Store):
    import io

    from PIL import Image

    from tests.storeutil import pattern_image

    doc, _ = st.add_document(pdf_bytes("lazy"), "lazy.pdf")
    st.begin_batches(doc.id, 1)
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=4, image=3))
    waiting = st.snippets_without_image(doc.id)
    assert [s.ordinal for s in waiting] == [1, 2, 3]  # the first snippet came with its image
    assert [s.ordinal for s in st.snippets_without_image(doc.id, 5, after_ordinal=1)] == [2, 3]

    def png(n: int) -> bytes:
        buf = io.BytesIO()
        pattern_image(n).save(buf, "PNG")
        return buf.getvalue()

    first = next(s for s in st.snippets(doc.id) if s.ordinal == 0)
    # The snippet that has an image keeps it; the others take theirs; a deleted id is skipped.
    assert st.set_snippet_images([(first.id, png(9), "png"), (waiting[0].id, png(5), "png"),
                                  (waiting[1].id, png(6), "png"), (10**9, png(7), "png")]) == 2
    assert st.set_snippet_images([(waiting[0].id, png(8), "png")]) == 0  # the first image drawn stays
    after = {s.ordinal: s for s in st.snippets(doc.id)}
    assert after[0].image_path == first.image_path and after[3].image_path is None
    drawn = st.image_bytes(after[1].image_path)
    assert Image.open(io.BytesIO(drawn)).getpixel((0, 0)) == pattern_image(5).getpixel((0, 0))
    assert [s.ordinal for s in st.snippets_without_image(doc.id)] == [3]
    # Images nobody uses (the skipped id's, the second draw's) are not kept.
    assert len(stored_images(st)) == 3
    st.delete_document(doc.id)
    assert stored_images(st) == []
