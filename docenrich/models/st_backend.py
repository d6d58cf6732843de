"""sentence-transformers backends: SentenceTransformer embedders and CrossEncoder rerankers.

The library is imported when a model is loaded, not when this module is imported.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from docenrich.models.base import EMBEDDER, RERANKER, TorchBackend, sigmoid

LIBRARY = "sentence-transformers"


class SentenceTransformerEmbedder(TorchBackend):
    """Any sentence-transformers model folder or hub id, as an embedder."""

    kind = EMBEDDER
    library = LIBRARY

    def __init__(self, name: str, batch_size: int, device: str):
        super().__init__(name, batch_size)
        from sentence_transformers import SentenceTransformer

        # Loaded on the CPU whatever `device` is: the manager moves it when it becomes resident.
        # The folder's modules.json decides pooling (mean pooling for all-MiniLM).
        self.model = SentenceTransformer(name, device="cpu")
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim())

    def module(self) -> Any:
        return self.model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` as L2-normalised float32 rows."""
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
            device=self.device,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class CrossEncoderReranker(TorchBackend):
    """Any sentence-transformers CrossEncoder with a single output, as a reranker."""

    kind = RERANKER
    library = LIBRARY

    def __init__(self, name: str, batch_size: int, device: str):
        super().__init__(name, batch_size)
        import torch
        from sentence_transformers import CrossEncoder

        # Loaded on the CPU whatever `device` is: the manager moves it when it becomes resident.
        self.model = CrossEncoder(name, device="cpu")
        self._identity = torch.nn.Identity()

    def module(self) -> Any:
        return self.model.model

    def to(self, device: str) -> None:
        """Move the weights, and the CrossEncoder's own notion of its device, to `device`."""
        self.model.model.to(device)
        self.model.to(device)
        self.device = device

    def score(self, query: str, passages: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits of each (query, passage) pair, and their sigmoid."""
        pairs = [(query, p) for p in passages]
        raw = self.model.predict(
            pairs, batch_size=self.batch_size, activation_fn=self._identity, show_progress_bar=False, convert_to_numpy=True
        )
        raw = np.asarray(raw, dtype=np.float32).reshape(len(passages), -1)[:, 0]
        return raw, sigmoid(raw)
