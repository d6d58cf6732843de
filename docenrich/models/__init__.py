"""Model loading for the worker: backends, the registry that picks one, the one-model manager.

Importing this package (or `docenrich.models.errors`) never imports torch or the model
libraries: the web process imports the error classes only. The other names load their
module on first access, and only loading a model imports the heavy libraries.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from docenrich.models.errors import (
    AcceleratorOutOfMemory,
    BadInput,
    ModelError,
    ModelLoadError,
    ModelUnavailable,
    is_out_of_memory,
)

if TYPE_CHECKING:
    from docenrich.models.base import (
        EMBEDDER,
        KINDS,
        RERANKER,
        Embedder,
        LoadedModel,
        Reranker,
        empty_accelerator_cache,
        is_accelerator,
        resolve_device,
        sigmoid,
    )
    from docenrich.models.manager import ModelManager, ModelSpec, get_manager
    from docenrich.models.registry import (
        BACKENDS,
        choose_backend,
        ensure_fetchable,
        import_model_libraries,
        load_backend,
        model_identity,
        uses_flag_backend,
    )

# Public name -> the submodule defining it, imported on first access.
_LAZY = {
    **dict.fromkeys(
        [
            "EMBEDDER",
            "KINDS",
            "RERANKER",
            "Embedder",
            "LoadedModel",
            "Reranker",
            "empty_accelerator_cache",
            "is_accelerator",
            "resolve_device",
            "sigmoid",
        ],
        "base",
    ),
    **dict.fromkeys(["ModelManager", "ModelSpec", "get_manager"], "manager"),
    **dict.fromkeys(
        [
            "BACKENDS",
            "choose_backend",
            "ensure_fetchable",
            "import_model_libraries",
            "load_backend",
            "model_identity",
            "uses_flag_backend",
        ],
        "registry",
    ),
}

__all__ = [
    "AcceleratorOutOfMemory",
    "BadInput",
    "ModelError",
    "ModelLoadError",
    "ModelUnavailable",
    "is_out_of_memory",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
