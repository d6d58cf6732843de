"""`flask docenrich migrate-to-postgres`: a SQLite store built from real PDFs copied into a real
PostgreSQL, interrupted and resumed, then compared row by row and by search results."""
from __future__ import annotations

import numpy as np
import pytest

from docenrich.storage import SQLiteStore, renditions
from docenrich.storage.postgres import PostgresStore
from tests.helpers.env import corpus_file
from tests.helpers.web import make_app

PDFS = ["004-pdflatex-4-pages/pdflatex-4-pages.pdf", "003-pdflatex-image/pdflatex-image.pdf",
        "026-latex-multicolumn/multicolumn.pdf"]
EMBEDDER = "minilm-test"


@pytest.fixture(scope="module")
def encoder(bundled_model):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(bundled_model, device="cpu")


def build_sqlite_store(data_dir, encoder) -> SQLiteStore:
    """Each PDF extracted for real and embedded with the bundled model, one in a named collection."""
    from docenrich.pdf import extract_snippets, inspect_pdf, render_page_thumbnail

    st = SQLiteStore(data_dir)
    for n, relative in enumerate(PDFS):
        data = corpus_file(relative).read_bytes()
        doc, _ = st.add_document(data, relative.rsplit("/", 1)[-1], inspect_pdf(data),
                                 collections=["manuals"] if n == 0 else None)
        snippets = extract_snippets(data, doc.id)
        vectors = encoder.encode([s.text or "figure" for s in snippets], normalize_embeddings=True)
        for s, v in zip(snippets, vectors, strict=True):
            s.embedding, s.embedding_model = v.astype(np.float32), EMBEDDER
        st.begin_batches(doc.id, 1)
        st.save_batch(doc.id, 0, snippets)
        st.save_thumb(doc.id, 1, render_page_thumbnail(data, 1))
    first = st.snippets(st.list_documents()[-1].id)[0]
    st.save_sparse([(first.id, {11: 0.5, 42: 1.25})], EMBEDDER)
    # As if the first document had been uploaded in another format: its pages come from a rendering.
    renditions.save(st, st.list_documents()[-1].id, corpus_file(PDFS[1]).read_bytes())
    return st


def run(app, url: str, *more: str):
    result = app.test_cli_runner().invoke(args=["docenrich", "migrate-to-postgres", "--database-url", url, *more])
    assert result.exit_code == 0, result.output
    return result.output


def test_copy_is_resumable_idempotent_and_complete(tmp_path, empty_pg_url, encoder):
    # A new database, as the command meets it: created and migrated by the copy itself.
    pg_url = empty_pg_url
    sq = build_sqlite_store(tmp_path / "data", encoder)
    app = make_app(DATA_DIR=str(tmp_path / "data"))
    # An interrupted run: one document copied, committed on its own.
    assert "Copied 1 documents; 0 were already there; 2 left to copy." in run(app, pg_url, "--limit", "1")
    assert "Copied 2 documents; 1 were already there; 0 left to copy." in run(app, pg_url)
    assert "Copied 0 documents; 3 were already there; 0 left to copy." in run(app, pg_url)
    pg = PostgresStore(pg_url)
    try:
        assert_same_store(sq, pg)
        assert_same_search(sq, pg, encoder)
        # The copy goes on working as a store: new snippets get ids after the copied ones.
        doc_id = sq.list_documents()[0].id
        assert pg.restart_document(doc_id) is not None and pg.snippets(doc_id) == []
        from docenrich.records import Snippet

        pg.save_batch(doc_id, 0, [Snippet(text="fresh", page=1, document_id=doc_id, ordinal=0)])
        assert pg.snippets(doc_id)[0].id > max(s.id for d in sq.list_documents() for s in sq.snippets(d.id))
    finally:
        pg.close()
        sq.close()


def assert_same_store(sq: SQLiteStore, pg: PostgresStore) -> None:
    docs = sq.list_documents()
    assert [d.to_dict() for d in pg.list_documents()] == [d.to_dict() for d in docs]
    assert [c.to_dict() for c in pg.list_collections()] == [c.to_dict() for c in sq.list_collections()]
    assert pg.embedder_counts() == sq.embedder_counts() and sum(sq.embedder_counts().values()) > 20
    assert pg.embedder_dims() == {EMBEDDER: 384} and pg.unindexed_count(EMBEDDER) == 0
    images = 0
    for d in docs:
        assert pg.pdf_bytes(d.id) == sq.pdf_bytes(d.id)
        assert pg.thumb_bytes(d.id, 1) == sq.thumb_bytes(d.id, 1) is not None
        assert pg.done_batches(d.id) == sq.done_batches(d.id) == {0}
        assert [s.to_dict() for s in pg.snippets(d.id)] == [s.to_dict() for s in sq.snippets(d.id)]
        for s in sq.snippets(d.id):
            if s.image_path:
                images += 1
                assert pg.image_bytes(s.image_path) == sq.image_bytes(s.image_path)
        for a, b in zip(pg.export_rows(d.id), sq.export_rows(d.id), strict=True):
            np.testing.assert_allclose(a.pop("embedding"), b.pop("embedding"), rtol=1e-6)
            assert a == b
    assert images >= 1
    kept = [renditions.load(pg, d.id) for d in docs]
    assert kept == [renditions.load(sq, d.id) for d in docs] and sum(r is not None for r in kept) == 1
    assert pg.sparse_search(EMBEDDER, {42: 1.0}, 5) == sq.sparse_search(EMBEDDER, {42: 1.0}, 5) != []


def ranked(hits: list[tuple[int, float]]) -> list[int]:
    return [i for i, _ in sorted(hits, key=lambda h: (-round(h[1], 4), h[0]))]


def assert_same_search(sq: SQLiteStore, pg: PostgresStore, encoder) -> None:
    exact, hnsw = sq.vector_index(EMBEDDER), pg.vector_index(EMBEDDER)
    exact.refresh()
    hnsw.refresh()
    assert len(exact) == len(hnsw)
    # The copy dropped the HNSW index for its bulk insert and built it again at the end.
    assert "vectors_hnsw_384" in hnsw.plan(encoder.encode(["anything"], normalize_embeddings=True)[0])
    for question in ("How many pages does the document have?", "an image in a LaTeX document", "columns of text"):
        q = encoder.encode([question], normalize_embeddings=True)[0]
        want, got = exact.search(q, 5), hnsw.search(q, 5)
        # Snippets of the same text score the same: ties are ordered by id on both sides.
        assert ranked(got) == ranked(want), question
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
        # BM25 and ts_rank_cd rank differently, but the same words match the same snippets.
        source = next(i for i, _ in want if len(sq.get_snippet(i).text.split()) >= 6)
        words = " ".join(sq.get_snippet(source).text.split()[:6])
        matched = {i for i, _ in sq.lexical_search(words, 1000)}
        assert source in matched and {i for i, _ in pg.lexical_search(words, 1000)} == matched, words
