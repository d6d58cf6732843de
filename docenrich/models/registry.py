"""Which backend loads a model: a table of named backends per kind, chosen by MODEL_BACKEND.

MODEL_BACKEND is "auto" or one of the table's backend names. In "auto" a BGE model goes
through FlagEmbedding (when it is installed) and every other model through
sentence-transformers.
"""
from __future__ import annotations

import gc
import importlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from docenrich.config import BUNDLED_MODEL, get_settings
from docenrich.models.base import EMBEDDER, RERANKER, LoadedModel
from docenrich.models.flag_backend import FlagEmbedder, FlagRerankerBackend, has_bge_m3_layout
from docenrich.models.st_backend import CrossEncoderReranker, SentenceTransformerEmbedder

log = logging.getLogger(__name__)

AUTO = "auto"
FLAG = "flag"
SENTENCE_TRANSFORMERS = "sentence-transformers"

# A backend class is built as Backend(name, batch_size, device) and loads into host memory.
BackendFactory = Callable[[str, int, str], LoadedModel]

BACKENDS: dict[str, dict[str, BackendFactory]] = {
    EMBEDDER: {FLAG: FlagEmbedder, SENTENCE_TRANSFORMERS: SentenceTransformerEmbedder},
    RERANKER: {FLAG: FlagRerankerBackend, SENTENCE_TRANSFORMERS: CrossEncoderReranker},
}
# The module each backend imports, probed before "auto" picks it.
BACKEND_LIBRARIES = {FLAG: "FlagEmbedding", SENTENCE_TRANSFORMERS: "sentence_transformers"}


def import_model_libraries() -> None:
    """Import torch and the model libraries (slow) without initialising CUDA."""
    # NVML-based availability checks keep CUDA uninitialised in a process that forks.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # OpenMP threads that spin while waiting turn a 10 ms query into 500 ms in a forked pool
    # child whenever another process wants the CPU; sleeping waits cost nothing measurable.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Thousands of modules allocate millions of objects that all live on: collecting while they
    # load is a quarter of the import time, paid again by every new pool child.
    collecting = gc.isenabled()
    gc.disable()
    try:
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401

        try:
            import FlagEmbedding  # noqa: F401
        except Exception as exc:  # FlagEmbedding is only needed for BGE models
            log.warning("FlagEmbedding unavailable (%s); BGE models will load through sentence-transformers", exc)
    finally:
        if collecting:
            gc.enable()


def is_bge_model(name: str) -> bool:
    """Whether `name` is a BGE model: a BAAI hub id, a folder with the BGE-M3 layout, or named bge*."""
    if name.startswith("BAAI/"):
        return True
    if has_bge_m3_layout(name):
        return True
    # The last part of a hub id or a folder path, e.g. ".../bge-small-en-v1.5".
    return Path(name).name.lower().startswith("bge")


def choose_backend(name: str, setting: str | None = None) -> str:
    """The backend that loads `name`: the one MODEL_BACKEND names, or in "auto" the one that fits."""
    setting = setting or get_settings().model_backend
    if setting != AUTO:
        if setting not in BACKEND_LIBRARIES:
            known = ", ".join([AUTO, *BACKEND_LIBRARIES])
            raise ValueError(f"MODEL_BACKEND={setting} is not one of {known}")
        return setting
    if is_bge_model(name) and _importable(BACKEND_LIBRARIES[FLAG]):
        return FLAG
    return SENTENCE_TRANSFORMERS


def uses_flag_backend(name: str) -> bool:
    """Whether `name` loads through FlagEmbedding under the current MODEL_BACKEND."""
    return choose_backend(name) == FLAG


def _importable(module: str) -> bool:
    # Imported, not just found: an installed FlagEmbedding can still fail to import
    # against the installed transformers, and then sentence-transformers must take over.
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


def ensure_fetchable(name: str, timeout: float = 3.0) -> None:
    """Fail in seconds, not minutes of retries, when a hub model is neither cached nor reachable."""
    if Path(name).exists():
        return
    if "/" not in name:
        raise OSError(f"no model folder at {name}")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        raise OSError(f"{name} is not in the model cache and HF_HUB_OFFLINE is set")
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError as exc:
        raise OSError(f"{name} is not in the model cache and the model hub is unreachable ({exc})") from exc


def load_backend(kind: str, name: str, batch_size: int, device: str) -> LoadedModel:
    """Load one model from disk (or the hub cache) into host memory."""
    ensure_fetchable(name)
    backend = choose_backend(name)
    return BACKENDS[kind][backend](name, batch_size, device)


def model_identity(configured: str) -> str:
    """The stable name vectors are recorded under (not a machine-specific path)."""
    if configured == BUNDLED_MODEL:
        return "bundled:all-MiniLM-L6-v2"
    return configured
