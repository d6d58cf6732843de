"""FlagEmbedding backends: BGEM3FlagModel or FlagModel embedders and the FlagReranker.

The library is imported when a model is loaded, not when this module is imported.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from docenrich.models.base import EMBEDDER, RERANKER, TorchBackend, is_accelerator, sigmoid
from docenrich.models.errors import ModelLoadError

LIBRARY = "FlagEmbedding"
# Heads that only a BGE-M3 checkpoint ships next to its transformer weights.
BGE_M3_FILES = ("sparse_linear.pt", "colbert_linear.pt")


def has_bge_m3_layout(name: str) -> bool:
    """Whether `name` is a local folder holding a BGE-M3 checkpoint's extra heads."""
    folder = Path(name)
    return any((folder / file).is_file() for file in BGE_M3_FILES)


def is_bge_m3(name: str) -> bool:
    """Whether `name` is a BGE-M3 model, by its name or, for a folder, by its files."""
    return "m3" in name.lower() or has_bge_m3_layout(name)


class FlagEmbedder(TorchBackend):
    """A BGE embedder through FlagEmbedding (BGEM3FlagModel for BGE-M3, FlagModel otherwise)."""

    kind = EMBEDDER
    library = LIBRARY

    def __init__(self, name: str, batch_size: int, device: str):
        super().__init__(name, batch_size)
        from FlagEmbedding import BGEM3FlagModel, FlagModel

        fp16 = is_accelerator(device)
        self.m3 = is_bge_m3(name)
        # BGE-M3 returns lexical (sparse) weights in the same forward pass as its dense vectors.
        self.sparse = self.m3
        model_class = BGEM3FlagModel if self.m3 else FlagModel
        with _one_thread():
            self.model = model_class(name, use_fp16=fp16, devices=[device], batch_size=batch_size)
        self.model.model.to("cpu")
        # From the config, not a probe encode: encoding would move the model onto the GPU,
        # and this runs in the worker's parent, which must not initialise CUDA before forking.
        self.dim = hidden_size(self.model.model)

    def module(self) -> Any:
        return self.model.model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` as L2-normalised float32 rows (BGE-M3: its dense vectors)."""
        if self.m3:
            out = self.model.encode(texts, batch_size=self.batch_size, return_dense=True)["dense_vecs"]
        else:
            out = self.model.encode(texts, batch_size=self.batch_size)
        return _normalised(out, len(texts))

    def encode_with_sparse(self, texts: list[str]) -> tuple[np.ndarray, list[dict[int, float]] | None]:
        """Dense rows and, for BGE-M3, each text's lexical weights {token id: weight}, in one pass."""
        if not self.m3:
            return self.encode(texts), None
        out = self.model.encode(texts, batch_size=self.batch_size, return_dense=True, return_sparse=True,
                                return_colbert_vecs=False)
        weights = [{int(t): float(w) for t, w in row.items() if w > 0} for row in out["lexical_weights"]]
        return _normalised(out["dense_vecs"], len(texts)), weights


class FlagRerankerBackend(TorchBackend):
    """A BGE reranker through FlagEmbedding's FlagReranker."""

    kind = RERANKER
    library = LIBRARY

    def __init__(self, name: str, batch_size: int, device: str):
        super().__init__(name, batch_size)
        from FlagEmbedding import FlagReranker

        self.model = FlagReranker(name, use_fp16=is_accelerator(device), devices=[device], batch_size=batch_size)
        self.model.model.to("cpu")

    def module(self) -> Any:
        return self.model.model

    def score(self, query: str, passages: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores of each (query, passage) pair, and their sigmoid."""
        pairs = [[query, p] for p in passages]
        raw = np.asarray(self.model.compute_score(pairs, normalize=False), dtype=np.float32).reshape(-1)
        return raw, sigmoid(raw)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded for a while: BGE-M3's heads are initialised on load, and an OpenMP
    thread pool started here, in the worker's parent, would deadlock the first forward pass of every
    forked child."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _normalised(out: Any, rows: int) -> np.ndarray:
    vectors = np.asarray(out, dtype=np.float32).reshape(rows, -1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12))


def hidden_size(module: Any) -> int:
    """Embedding width of a transformers model, or of a wrapper holding one as `.model`."""
    while module is not None:
        config = getattr(module, "config", None)
        if config is not None and getattr(config, "hidden_size", None):
            return int(config.hidden_size)
        module = getattr(module, "model", None)
    raise ModelLoadError("cannot tell the embedding dimension of this model")
