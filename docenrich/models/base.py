"""What every model backend offers, and the device helpers the backends and the manager share.

torch is imported inside the device helpers, never at module level: the web process imports
this package for its error classes and must not pay for torch.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

EMBEDDER = "embedder"
RERANKER = "reranker"
KINDS = (EMBEDDER, RERANKER)


class LoadedModel(Protocol):
    """A model held in host memory that the manager can move between devices."""

    name: str
    kind: str
    library: str
    device: str
    dim: int | None

    def to(self, device: str) -> None:
        """Move the weights to `device`."""
        ...


class Embedder(LoadedModel, Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts`."""
        ...


class Reranker(LoadedModel, Protocol):
    """Scores passages against a query: raw scores and the same mapped to 0..1."""

    def score(self, query: str, passages: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Score each passage against `query`."""
        ...


class TorchBackend:
    """Shared plumbing of a backend whose weights live in one torch module."""

    kind: str
    library: str
    dim: int | None = None

    def __init__(self, name: str, batch_size: int):
        self.name = name
        self.batch_size = batch_size
        self.device = "cpu"

    def module(self) -> Any:
        """The torch module holding the weights."""
        raise NotImplementedError

    def to(self, device: str) -> None:
        """Move the weights to `device`."""
        self.module().to(device)
        self.device = device


def resolve_device(requested: str) -> str:
    """Map MODEL_DEVICE ("auto", "cpu", "cuda", "cuda:1", "mps") to a concrete device."""
    if requested and requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def is_accelerator(device: str) -> bool:
    """Whether `device` is anything but the CPU."""
    return not device.startswith("cpu")


def empty_accelerator_cache() -> None:
    """Return freed accelerator memory to the driver."""
    import torch

    # Only where CUDA is already in use: the worker parent calls this too and must never
    # be the process that initialises CUDA before it forks.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, computed in float64 and returned as float32."""
    return (1.0 / (1.0 + np.exp(-np.asarray(x).astype(np.float64)))).astype(np.float32)
