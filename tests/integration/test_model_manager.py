"""The model manager in-process: both backends, single residency, host cache, fallback."""
from __future__ import annotations

import numpy as np
import pytest

from docenrich.config import load_settings
from docenrich.models import ModelManager, ModelUnavailable, uses_flag_backend


@pytest.fixture()
def bge_named(tmp_path, bundled_model, reranker_checkpoint):
    """The bundled checkpoints under bge-* names, so the FlagEmbedding loaders take them."""
    embedder = tmp_path / "bge-small-test"
    reranker = tmp_path / "bge-reranker-test"
    embedder.symlink_to(bundled_model, target_is_directory=True)
    reranker.symlink_to(reranker_checkpoint, target_is_directory=True)
    return str(embedder), str(reranker)


def manager(**overrides) -> ModelManager:
    return ModelManager(load_settings(model_device="cpu", **overrides))


def test_flag_backends_load_bge_models_and_score_like_the_cross_encoder(bge_named, reranker_checkpoint):
    import torch
    from sentence_transformers import CrossEncoder

    embedder_path, reranker_path = bge_named
    assert uses_flag_backend(embedder_path) and uses_flag_backend("BAAI/bge-m3")
    assert not uses_flag_backend("sentence-transformers/all-MiniLM-L6-v2")
    m = manager(embedder_model=embedder_path, reranker_model=reranker_path)
    embedder = m.embedder()
    assert embedder.library == "FlagEmbedding" and embedder.dim == 384
    vectors = embedder.encode(["a sentence", "another one"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    reranker = m.reranker()
    assert reranker.library == "FlagEmbedding"
    passages = ["snippets of PDFs", "unrelated bananas"]
    raw, normalized = reranker.score("pdf snippets", passages)
    direct = CrossEncoder(str(reranker_checkpoint), device="cpu").predict(
        [("pdf snippets", p) for p in passages], activation_fn=torch.nn.Identity()
    )
    np.testing.assert_allclose(raw, direct, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(normalized, 1 / (1 + np.exp(-raw)), rtol=1e-5)


def test_one_resident_model_and_host_cache(bundled_model, reranker_checkpoint):
    m = manager(embedder_model="bundled", reranker_model=str(reranker_checkpoint))
    m.embedder()
    m.reranker()
    status = m.status()
    assert status["resident"] == "reranker" and len(status["loaded"]) == 1
    assert status["host_cache"] == ["embedder", "reranker"]
    events = [(e["event"], e["kind"]) for e in m.events]
    assert ("unload", "embedder") in events and events[-1] == ("load", "reranker")

    no_cache = manager(embedder_model="bundled", reranker_model=str(reranker_checkpoint), model_host_cache=1)
    no_cache.embedder()
    no_cache.reranker()
    assert no_cache.status()["host_cache"] == ["reranker"], "with a cache of one the embedder is freed"


def test_unreachable_embedder_falls_back_loudly(bundled_model, caplog):
    m = manager(embedder_model="BAAI/bge-m3", reranker_model="BAAI/bge-reranker-v2-m3")
    embedder = m.embedder()
    assert embedder.dim == 384
    info = m.status()["models"]["embedder"]
    assert info["fallback"] is True and info["effective"] == "bundled:all-MiniLM-L6-v2"
    assert any("FALLBACK" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    with pytest.raises(ModelUnavailable, match="no reranker available"):
        m.reranker()
    assert m.status()["resident"] == "embedder", "a failed switch leaves the embedder usable"


def test_model_status_is_published_outside_the_model_lock(bundled_model):
    from docenrich.config import load_settings
    from docenrich.models import ModelManager

    manager = ModelManager(load_settings(model_device="cpu", embedder_model="bundled", reranker_model="none-here"))
    held: list[bool] = []
    manager.on_change = lambda status: held.append(manager._lock._is_owned())
    manager.embedder().encode(["a sentence"])
    assert held and not any(held), held
