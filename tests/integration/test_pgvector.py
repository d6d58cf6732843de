"""PostgreSQL's own: HNSW recall and its use by the planner, filtered dense search, the admission
cap across processes, migrations racing, backend choice, and files served from the database."""
from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from docenrich.records import Snippet
from docenrich.storage import (
    QueueFull,
    SQLiteStore,
    StorageError,
    open_store,
    schema_head,
)
from docenrich.storage.base import TransientStorageError
from docenrich.storage.postgres import PostgresStore
from docenrich.vectorindex import VectorIndex
from tests.storeutil import make_batch, pdf_bytes, run_sql

DIM = 384


def clustered(rng: np.random.Generator, n: int, centers: int = 40, spread: float = 0.35) -> np.ndarray:
    """Unit vectors around a few random centres, like embeddings of documents on a few topics."""
    middle = rng.standard_normal((centers, DIM)).astype(np.float32)
    return _near(rng, middle[rng.integers(0, centers, n)], spread)


def _near(rng: np.random.Generator, points: np.ndarray, spread: float) -> np.ndarray:
    """Unit vectors at a random offset from points (scaled like them)."""
    noise = rng.standard_normal(points.shape).astype(np.float32) * np.linalg.norm(points, axis=1, keepdims=True)
    moved = points + spread * noise / np.sqrt(DIM)
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def fill(st: PostgresStore, vectors: np.ndarray, docs: int = 6, model: str = "m") -> list[str]:
    """Documents of plain snippets, then their vectors through save_vectors (as re-embedding stores them)."""
    per_doc = len(vectors) // docs
    doc_ids = []
    for d in range(docs):
        doc, _ = st.add_document(pdf_bytes(f"recall-{d}"), f"{d}.pdf")
        doc_ids.append(doc.id)
        snippets = [Snippet(text=f"snippet {d}-{i}", page=1, document_id=doc.id, ordinal=i) for i in range(per_doc)]
        st.save_batch(doc.id, 0, snippets)
        ids = [s.id for s in st.snippets(doc.id)]
        st.save_vectors(list(zip(ids, vectors[d * per_doc:(d + 1) * per_doc], strict=True)), model)
    return doc_ids


@pytest.fixture
def pg(pg_url):
    st = PostgresStore(pg_url)
    yield st
    st.close()


def test_search_breadth_grows_with_the_index_unless_configured(pg_url):
    from docenrich.storage.postgres.index import auto_ef_search

    assert [auto_ef_search(n) for n in (0, 3000, 250_000, 1_000_000, 10_000_000)] == [100, 100, 100, 400, 1000]
    configured = PostgresStore(pg_url, ef_search=250)
    try:
        assert configured.vector_index("m").ef_search == 250
    finally:
        configured.close()
    default = open_store(database_url=pg_url)  # PG_HNSW_EF_SEARCH unset: by the index's size
    try:
        assert default.vector_index("m").configured_ef == 0
    finally:
        default.close()


def test_hnsw_recall_at_10_against_exact_search(pg):
    rng = np.random.default_rng(11)
    vectors = clustered(rng, 3000)
    doc_ids = fill(pg, vectors)
    ids, docs, matrix, _ = pg.load_vectors("m")
    index = pg.vector_index("m")
    index.refresh()
    assert (len(index), index.dim, index.ef_search) == (3000, DIM, 100)  # the floor of the automatic breadth
    # Questions resemble the stored passages: each query lies near one stored vector.
    queries = _near(np.random.default_rng(12), vectors[np.random.default_rng(13).integers(0, 3000, 50)], 0.5)
    recalls = []
    for q in queries:
        exact = set(ids[np.argsort(-(matrix @ q))[:10]].tolist())
        got = index.search(q, 10)
        assert len(got) == 10 and [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        recalls.append(len(exact & {sid for sid, _ in got}) / 10)
    assert np.mean(recalls) >= 0.95, np.mean(recalls)
    # The planner really takes the HNSW index (else the recall above would be that of an exact scan).
    plan = index.plan(queries[0])
    assert "vectors_hnsw_384" in plan, plan
    # Within documents: exact for small sets, and never a row of another document.
    q = queries[1]
    for chosen in ([doc_ids[2]], doc_ids[:3]):
        keep = np.isin(docs, chosen)
        want = ids[keep][np.argsort(-(matrix[keep] @ q))[:10]].tolist()
        assert [sid for sid, _ in index.search(q, 10, document_ids=set(chosen))] == want
    # Past the exact threshold the filtered HNSW scan over-fetches; still only rows of the set.
    wide = PostgresStore(pg.database_url).vector_index("m")
    wide.exact_below = 0
    wide.refresh()
    got = wide.search(q, 10, document_ids=set(doc_ids[:3]))
    assert len(got) == 10 and set(got) <= set(index.search(q, 500, document_ids=set(doc_ids[:3])))
    wide.store.close()


def _index_definition(st: PostgresStore, dim: int = DIM) -> str:
    return run_sql(st, f"SELECT indexdef FROM pg_indexes WHERE indexname = 'vectors_hnsw_{dim}'")[0]["indexdef"]


def test_the_hnsw_index_holds_float16_and_a_filtered_scan_iterates_to_the_sets_top_k(pg):
    rng = np.random.default_rng(21)
    vectors = clustered(rng, 3000)
    doc_ids = fill(pg, vectors, docs=30)  # 100 rows each: one document is 3% of the rows
    assert pg.vector_features.halfvec and pg.vector_features.iterative, pg.vector_features
    assert "halfvec(384)" in _index_definition(pg) and "halfvec_cosine_ops" in _index_definition(pg)
    ids, docs, matrix, _ = pg.load_vectors("m")
    index = pg.vector_index("m")
    index.exact_below = 0  # every filtered search walks the graph
    index.refresh()
    assert "vectors_hnsw_384" in index.plan(vectors[0])
    recalls = []
    for n, q in enumerate(_near(np.random.default_rng(22), vectors[::300], 0.5)):
        chosen = doc_ids[(7 * n) % len(doc_ids)]
        keep = docs == chosen
        want = ids[keep][np.argsort(-(matrix[keep] @ q))[:10]].tolist()
        got = index.search(q, 10, document_ids={chosen})
        assert len(got) == 10 and [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        assert {sid for sid, _ in got} <= set(ids[keep].tolist())
        recalls.append(len(set(want) & {sid for sid, _ in got}) / 10)
    assert np.mean(recalls) >= 0.9, recalls


def test_an_older_float32_index_is_rebuilt_as_float16_when_the_store_opens(pg):
    from docenrich.storage.postgres.index import hnsw_index_sql

    fill(pg, clustered(np.random.default_rng(23), 300), docs=3)
    run_sql(pg, f"DROP INDEX vectors_hnsw_{DIM}")
    run_sql(pg, hnsw_index_sql(DIM, half=False))
    run_sql(pg, "UPDATE alembic_version SET version_num = '0003'")
    assert "halfvec" not in _index_definition(pg)
    reopened = PostgresStore(pg.database_url)
    try:
        assert "halfvec_cosine_ops" in _index_definition(reopened)
        assert run_sql(reopened, "SELECT version_num FROM alembic_version")[0]["version_num"] == schema_head()
    finally:
        reopened.close()


def test_scores_are_cosine_similarity_like_the_numpy_index(pg):
    rng = np.random.default_rng(3)
    vectors = clustered(rng, 600)
    fill(pg, vectors, docs=3)
    q = vectors[17]
    sql, numpy = pg.vector_index("m"), VectorIndex(pg, "m")
    sql.refresh()
    numpy.refresh()
    a, b = sql.search(q, 5), numpy.search(q, 5)
    assert [i for i, _ in a] == [i for i, _ in b]
    np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)
    assert a[0][1] == pytest.approx(1.0, abs=1e-5)


def _admit(url: str, tag: int, start, results) -> None:
    st = PostgresStore(url)
    start.wait(60)
    for i in range(4):
        try:
            st.add_document(pdf_bytes(f"cap-{tag}-{i}"), f"{tag}-{i}.pdf", max_queued=5)
            results.put("admitted")
        except QueueFull:
            results.put("full")
    st.close()


def test_admission_cap_holds_across_processes(pg):
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_admit, args=(pg.database_url, tag, start, results)) for tag in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(16)]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert outcomes.count("admitted") == 5 and outcomes.count("full") == 11
    assert pg.queued_count() == 5 and len(pg.list_documents()) == 5


def _open(url: str, start, results) -> None:
    start.wait(60)
    st = PostgresStore(url)
    results.put(run_sql(st, "SELECT version_num FROM alembic_version")[0]["version_num"])
    st.close()


def test_processes_starting_at_once_migrate_once(empty_pg_url):
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(empty_pg_url, start, results)) for _ in range(3)]
    for p in procs:
        p.start()
    versions = [results.get(timeout=120) for _ in range(3)]
    for p in procs:
        p.join(60)
    assert versions == [schema_head()] * 3 and [p.exitcode for p in procs] == [0, 0, 0]


def test_newer_schema_is_refused(pg):
    run_sql(pg, "UPDATE alembic_version SET version_num = 'ffffffffffff'")
    with pytest.raises(StorageError, match="newer"):
        PostgresStore(pg.database_url)


def test_open_store_follows_database_url(pg_url, tmp_path):
    st = open_store(data_dir=tmp_path, database_url=pg_url)
    assert isinstance(st, PostgresStore) and type(st.vector_index("m")).__name__ == "PgVectorIndex"
    st.close()
    assert isinstance(open_store(data_dir=tmp_path, database_url=""), SQLiteStore)
    with pytest.raises(StorageError, match="postgresql://"):
        open_store(data_dir=tmp_path, database_url="mysql://x")
    with pytest.raises(StorageError, match="connect"):
        PostgresStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_web_app_serves_files_and_searches_from_postgres(pg, tmp_path):
    from tests.helpers.pdfs import pdf_with_text
    from tests.helpers.web import make_app

    doc, _ = pg.add_document(pdf_with_text("Lighthouse keepers trim the lamp wicks."), "l.pdf")
    pg.update_document(doc.id, pages=1)
    batch = make_batch(doc.id, 0, n=2, image=7, dim=16)
    pg.save_batch(doc.id, 0, batch)
    app = make_app(DATA_DIR=str(tmp_path / "unused"), DATABASE_URL=pg.database_url)
    svc = app.extensions["docenrich"]
    assert isinstance(svc.store, PostgresStore) and type(svc.index_for("test-model")).__name__ == "PgVectorIndex"
    client = app.test_client()
    image = next(s for s in pg.snippets(doc.id) if s.image_path)
    got = client.get(f"/api/snippets/{image.id}/image")
    assert got.status_code == 200 and got.data == batch[0].image_bytes()[0]
    assert client.get(f"/api/snippets/{image.id}/image", headers={"If-None-Match": got.headers["ETag"]}).status_code == 304
    thumb = client.get(f"/api/documents/{doc.id}/pages/1/thumbnail")
    assert thumb.status_code == 200 and thumb.data[:4] == b"\x89PNG" and pg.thumb_bytes(doc.id, 1) == thumb.data
    assert not (tmp_path / "unused" / "thumbs" / doc.id).exists()
    svc.store.close()


def test_a_lost_connection_is_a_retryable_storage_error_then_reconnects(pg, pg_server):
    doc, _ = pg.add_document(pdf_bytes("lost"), "lost.pdf")
    pid = run_sql(pg, "SELECT pg_backend_pid() AS pid")[0]["pid"]
    pg_server.admin(f"SELECT pg_terminate_backend({int(pid)})")
    with pytest.raises(TransientStorageError, match="busy, restarting or unreachable"):
        pg.update_document(doc.id, stage="after the cut")
    # The broken connection is replaced on the next call, as after a database restart.
    assert pg.update_document(doc.id, stage="after the cut").stage == "after the cut"
