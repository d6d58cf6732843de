"""BGE-M3's lexical weights: through the real BGEM3FlagModel, and stored beside the vectors on both
backends. (A BGE-M3 worker whose search fuses them as a third list: tests/system/test_bge_m3_worker.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from docenrich.config import load_settings
from docenrich.models import ModelManager
from docenrich.records import Snippet


@pytest.fixture(scope="module")
def m3(bge_m3_checkpoint):
    manager = ModelManager(load_settings(model_device="cpu", embedder_model=str(bge_m3_checkpoint)))
    return manager.embedder()


def test_one_pass_gives_dense_vectors_and_lexical_weights(m3, bge_m3_checkpoint):
    from FlagEmbedding import BGEM3FlagModel

    assert m3.library == "FlagEmbedding" and m3.sparse is True and m3.dim == 384
    texts = ["Set R_MAKEVARS_USER to a personal file", "the cache grows until its limit"]
    dense, weights = m3.encode_with_sparse(texts)
    assert dense.shape == (2, 384) and dense.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, atol=1e-5)
    assert len(weights) == 2 and all(weights) and all(isinstance(t, int) and w > 0 for t, w in weights[0].items())
    direct = BGEM3FlagModel(str(bge_m3_checkpoint), use_fp16=False, devices=["cpu"]).encode(
        texts, return_dense=True, return_sparse=True)
    assert {int(t) for t in direct["lexical_weights"][0]} >= set(weights[0])
    for t, w in weights[0].items():
        assert abs(direct["lexical_weights"][0][str(t)] - w) < 1e-4
    np.testing.assert_allclose(dense, m3.encode(texts), atol=1e-5)


def test_store_keeps_sparse_postings_in_step(lexical_store):
    st = lexical_store
    doc, _ = st.add_document(b"%PDF-1.4\n% sparse\n%%EOF\n", "s.pdf")
    st.begin_batches(doc.id, 1)

    def snip(i, text, sparse, kind="text"):
        return Snippet(text=text, page=1, bbox=(0, 0, 1, 1), document_id=doc.id, ordinal=i, kind=kind,
                       embedding=np.ones(4, np.float32) / 2, embedding_model="m3", sparse=sparse)

    st.save_batch(doc.id, 0, [snip(0, "a", {7: 0.5, 9: 0.1}), snip(1, "b", {9: 0.9}), snip(2, "c", {7: 2.0}, "toc")])
    found = st.sparse_search("m3", {7: 1.0, 9: 1.0}, 5)
    ids = {s.ordinal: s.id for s in st.snippets(doc.id)}
    assert [sid for sid, _ in found] == [ids[2], ids[1], ids[0]]
    assert found[0][1] == pytest.approx(2.0) and found[2][1] == pytest.approx(0.6)
    assert [sid for sid, _ in st.sparse_search("m3", {7: 1.0}, 5, exclude_kinds={"toc"})] == [ids[0]]
    assert st.sparse_search("other-model", {7: 1.0}, 5) == []
    st.save_batch(doc.id, 0, [snip(0, "a changed", None)])  # new text, no weights: the old ones are stale
    assert ids[0] not in {sid for sid, _ in st.sparse_search("m3", {7: 1.0, 9: 1.0}, 5)}
    st.save_sparse([(ids[0], {5: 0.3})], "m3")  # as `reembed` stores them
    assert st.sparse_search("m3", {5: 1.0}, 5) == [(ids[0], pytest.approx(0.3))]
    st.delete_document(doc.id)
    assert st.sparse_search("m3", {7: 1.0, 9: 1.0, 5: 1.0}, 5) == []
    st.close()
