"""sentence-transformers backends: SentenceTransformer embedders and CrossEncoder rerankers.

The library is imported when a model is loaded, not when this module is imported.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from docenrich.models.base import EMBEDDER, RERANKER, TorchBackend, sigmoid

LIBRARY = "sentence-transformers"
# Pairs scored per forward pass: small enough that length-sorted batches pad little.
RERANK_MICRO_BATCH = 8


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
        from sentence_transformers import CrossEncoder

        # Loaded on the CPU whatever `device` is: the manager moves it when it becomes resident.
        self.model = CrossEncoder(name, device="cpu")

    def module(self) -> Any:
        return self.model.model

    def to(self, device: str) -> None:
        """Move the weights, and the CrossEncoder's own notion of its device, to `device`."""
        self.model.model.to(device)
        self.model.to(device)
        self.device = device

    def score(self, query: str, passages: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits of each (query, passage) pair, and their sigmoid."""
        import torch

        raw = np.empty(len(passages), dtype=np.float32)
        # Shortest first, in small batches: a batch pads to its longest pair, so one long
        # passage no longer makes every pair cost the model's full length.
        order = sorted(range(len(passages)), key=lambda i: len(passages[i]))
        with torch.inference_mode(), _autocast(self.device):
            for start in range(0, len(order), RERANK_MICRO_BATCH):
                chosen = order[start : start + RERANK_MICRO_BATCH]
                raw[chosen] = self._logits(query, [passages[i] for i in chosen])
        return raw, sigmoid(raw)

    def _logits(self, query: str, passages: list[str]) -> np.ndarray:
        # Truncated at the model's real limit (its position embeddings), longest side first.
        features = self.model.tokenizer(
            [query] * len(passages), passages, padding=True, truncation="longest_first",
            max_length=self.max_length, return_tensors="pt",
        ).to(self.device)
        logits = self.model.model(**features).logits
        return logits[:, 0].float().cpu().numpy()

    @property
    def max_length(self) -> int:
        """Tokens per (query, passage) pair the model can read."""
        limits = [self.model.max_length, getattr(self.model.tokenizer, "model_max_length", None),
                  getattr(self.model.model.config, "max_position_embeddings", None)]
        # Tokenizers without a limit report a huge sentinel (int(1e30)); ignore it.
        return min(int(v) for v in limits if v and int(v) < 1_000_000) if any(limits) else 512


def _autocast(device: str):
    """fp16 autocast on CUDA, where it halves the time; nothing elsewhere."""
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
