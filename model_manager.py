"""The rule "at most one model on the accelerator": loading, host caching, swapping.

Two backends share one interface: FlagEmbedding for BAAI models, sentence-transformers
for any other model path. torch and the model libraries are imported lazily so the
web process never pays for them; the worker's parent process imports them (and may
load weights into host memory) before forking, without ever touching CUDA.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from settings import BUNDLED_MODEL, Settings, get_settings

log = logging.getLogger(__name__)

EMBEDDER = "embedder"
RERANKER = "reranker"
KINDS = (EMBEDDER, RERANKER)


class ModelError(RuntimeError):
    """A model could not be used; `transient` says whether a retry may help."""

    transient = True


class ModelLoadError(ModelError):
    """Loading weights failed (disk, hub cache, out of memory)."""


class ModelUnavailable(ModelError):
    """No usable model of this kind is configured or installed; retrying will not help."""

    transient = False


class BadInput(ValueError):
    """The caller's input cannot be processed; retrying will not help."""


class AcceleratorOutOfMemory(ModelError):
    """The accelerator ran out of memory; the cache was emptied and a retry may succeed."""


def import_model_libraries() -> None:
    """Import torch and the model libraries (slow) without initialising CUDA."""
    # NVML-based availability checks keep CUDA uninitialised in a process that forks.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # OpenMP threads that spin while waiting turn a 10 ms query into 500 ms in a forked pool
    # child whenever another process wants the CPU; sleeping waits cost nothing measurable.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch  # noqa: F401
    import sentence_transformers  # noqa: F401

    try:
        import FlagEmbedding  # noqa: F401
    except Exception as exc:  # FlagEmbedding is only needed for BAAI models
        log.warning("FlagEmbedding unavailable (%s); BAAI models will load through sentence-transformers", exc)


def resolve_device(requested: str) -> str:
    """Map MODEL_DEVICE ("auto", "cpu", "cuda", "cuda:1", "mps") to a concrete device."""
    if requested and requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def is_accelerator(device: str) -> bool:
    return not device.startswith("cpu")


def empty_accelerator_cache() -> None:
    """Return freed accelerator memory to the driver."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def uses_flag_backend(name: str) -> bool:
    """BAAI models go through FlagEmbedding, everything else through sentence-transformers."""
    if get_settings().model_backend == "sentence-transformers":
        return False
    if not name.startswith("BAAI/") and not Path(name).name.lower().startswith("bge"):
        return False
    try:
        import FlagEmbedding  # noqa: F401
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------- backends


class Backend:
    """One loaded model: `encode` for embedders, `score` for rerankers, `to` to move it."""

    kind: str
    name: str
    library: str
    dim: int | None = None

    def __init__(self, name: str, kind: str, batch_size: int):
        self.name = name
        self.kind = kind
        self.batch_size = batch_size
        self.device = "cpu"

    def module(self):
        raise NotImplementedError

    def to(self, device: str) -> None:
        """Move the weights to `device`."""
        self.module().to(device)
        self.device = device

    def nbytes(self) -> int:
        """Bytes held by parameters and buffers."""
        mod = self.module()
        total = sum(p.numel() * p.element_size() for p in mod.parameters())
        return total + sum(b.numel() * b.element_size() for b in mod.buffers())

    def encode(self, texts: list[str]) -> np.ndarray:
        raise BadInput(f"{self.name} is a {self.kind}, not an embedder")

    def score(self, query: str, passages: list[str]) -> tuple[np.ndarray, np.ndarray]:
        raise BadInput(f"{self.name} is a {self.kind}, not a reranker")


class SentenceTransformerEmbedder(Backend):
    library = "sentence-transformers"

    def __init__(self, name: str, batch_size: int):
        super().__init__(name, EMBEDDER, batch_size)
        from sentence_transformers import SentenceTransformer

        # The folder's modules.json decides pooling (mean pooling for all-MiniLM).
        self.model = SentenceTransformer(name, device="cpu")
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim())

    def module(self):
        return self.model

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
            device=self.device,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class FlagEmbedder(Backend):
    library = "FlagEmbedding"

    def __init__(self, name: str, batch_size: int, device: str):
        super().__init__(name, EMBEDDER, batch_size)
        from FlagEmbedding import BGEM3FlagModel, FlagModel

        fp16 = is_accelerator(device)
        if "m3" in name.lower():
            self.model = BGEM3FlagModel(name, use_fp16=fp16, devices=[device], batch_size=batch_size)
            self.m3 = True
        else:
            self.model = FlagModel(name, use_fp16=fp16, devices=[device], batch_size=batch_size)
            self.m3 = False
        self.model.model.to("cpu")
        # From the config, not a probe encode: encoding would move the model onto the GPU,
        # and this runs in the worker's parent, which must not initialise CUDA before forking.
        self.dim = _hidden_size(self.model.model)

    def module(self):
        return self.model.model

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.m3:
            out = self.model.encode(texts, batch_size=self.batch_size, return_dense=True)["dense_vecs"]
        else:
            out = self.model.encode(texts, batch_size=self.batch_size)
        vectors = np.asarray(out, dtype=np.float32).reshape(len(texts), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12))


class CrossEncoderReranker(Backend):
    library = "sentence-transformers"

    def __init__(self, name: str, batch_size: int):
        super().__init__(name, RERANKER, batch_size)
        import torch
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(name, device="cpu")
        self._identity = torch.nn.Identity()

    def module(self):
        return self.model.model

    def to(self, device: str) -> None:
        self.model.model.to(device)
        self.model.to(device)
        self.device = device

    def score(self, query: str, passages: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(query, p) for p in passages]
        raw = self.model.predict(
            pairs, batch_size=self.batch_size, activation_fn=self._identity, show_progress_bar=False, convert_to_numpy=True
        )
        raw = np.asarray(raw, dtype=np.float32).reshape(len(passages), -1)[:, 0]
        return raw, _sigmoid(raw)


class FlagRerankerBackend(Backend):
    library = "FlagEmbedding"

    def __init__(self, name: str, batch_size: int, device: str):
        super().__init__(name, RERANKER, batch_size)
        from FlagEmbedding import FlagReranker

        self.model = FlagReranker(name, use_fp16=is_accelerator(device), devices=[device], batch_size=batch_size)
        self.model.model.to("cpu")

    def module(self):
        return self.model.model

    def score(self, query: str, passages: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [[query, p] for p in passages]
        raw = np.asarray(self.model.compute_score(pairs, normalize=False), dtype=np.float32).reshape(-1)
        return raw, _sigmoid(raw)


def _hidden_size(module) -> int:
    """Embedding width of a transformers model, or of a wrapper holding one as `.model`."""
    while module is not None:
        config = getattr(module, "config", None)
        if config is not None and getattr(config, "hidden_size", None):
            return int(config.hidden_size)
        module = getattr(module, "model", None)
    raise ModelLoadError("cannot tell the embedding dimension of this model")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


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


def load_backend(kind: str, name: str, batch_size: int, device: str) -> Backend:
    """Load one model from disk (or the hub cache) into host memory."""
    ensure_fetchable(name)
    flag = uses_flag_backend(name)
    if kind == EMBEDDER:
        return FlagEmbedder(name, batch_size, device) if flag else SentenceTransformerEmbedder(name, batch_size)
    return FlagRerankerBackend(name, batch_size, device) if flag else CrossEncoderReranker(name, batch_size)


# --------------------------------------------------------------------------- manager


@dataclass
class ModelSpec:
    """What the configuration asks for, and what was actually loaded."""

    kind: str
    configured: str
    effective: str | None = None  # the name vectors are recorded under
    path: str | None = None
    fallback: bool = False
    unavailable: str | None = None  # why no model of this kind can be used
    notes: list[str] = field(default_factory=list)


class ModelManager:
    """Owns every model of one worker process and keeps at most one on the device."""

    def __init__(self, settings: Settings | None = None, device: str | None = None):
        self.settings = settings or get_settings()
        self._requested_device = device or self.settings.model_device
        self._device: str | None = None
        self._lock = threading.RLock()
        self._models: dict[str, Backend] = {}  # host cache, the resident one included
        self._resident: str | None = None
        self._specs = {
            EMBEDDER: ModelSpec(EMBEDDER, self.settings.embedder_model),
            RERANKER: ModelSpec(RERANKER, self.settings.reranker_model),
        }
        self.timings: dict[str, float] = {}
        self.events: list[dict[str, Any]] = []
        self.on_change = None  # callable(status dict), set by the worker to publish status

    # -- public ------------------------------------------------------------------

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = resolve_device(self._requested_device)
        return self._device

    def embedder(self) -> Backend:
        """The embedder, resident on the device (the reranker is moved off first)."""
        return self._acquire(EMBEDDER)

    def reranker(self) -> Backend:
        """The reranker, resident on the device (the embedder is moved off first)."""
        return self._acquire(RERANKER)

    def effective_name(self, kind: str) -> str | None:
        return self._specs[kind].effective

    def preload_host(self, kinds: tuple[str, ...] = KINDS) -> None:
        """Load weights into host memory only, so forked children start warm; never touches CUDA."""
        with self._lock:
            for kind in kinds:
                if kind in self._models or self._specs[kind].unavailable:
                    continue
                try:
                    self._load(kind)
                except ModelError as exc:
                    log.warning("preload of the %s skipped: %s", kind, exc)

    def unload(self) -> None:
        """Move the resident model off the device and free accelerator memory."""
        with self._lock:
            if self._resident is not None:
                self._offload(self._resident)

    def clear(self) -> None:
        """Drop every model, host copies included."""
        with self._lock:
            self.unload()
            for kind in list(self._models):
                self._drop(kind)

    def reset_after_fork(self) -> None:
        """A forked child gets a fresh lock; the parent's cannot be held here."""
        self._lock = threading.RLock()

    def status(self) -> dict[str, Any]:
        """What is loaded where, for monitoring."""
        with self._lock:
            return {
                "pid": os.getpid(),
                "device": self._device or self._requested_device,
                "resident": self._resident,
                "loaded": [self._models[self._resident].name] if self._resident else [],
                "host_cache": sorted(self._models),
                "models": {
                    kind: {
                        "configured": spec.configured,
                        "effective": spec.effective,
                        "fallback": spec.fallback,
                        "unavailable": spec.unavailable,
                        "dim": self._models[kind].dim if kind in self._models else None,
                        "library": self._models[kind].library if kind in self._models else None,
                        "notes": spec.notes,
                    }
                    for kind, spec in self._specs.items()
                },
                "timings": dict(self.timings),
            }

    # -- internals ---------------------------------------------------------------

    def _acquire(self, kind: str) -> Backend:
        with self._lock:
            if self._resident == kind:
                return self._models[kind]
            start = time.perf_counter()
            previous = self._resident
            model = self._models.get(kind)
            if model is None:
                self._make_room()
                # Loaded into host memory while the other model still serves: a load that
                # fails leaves the resident model in place.
                model = self._load(kind)
            if self._resident is not None:
                self._offload(self._resident)
            try:
                model.to(self.device)
            except Exception as exc:
                raise self.classify(exc) from exc
            self._resident = kind
            took = time.perf_counter() - start
            what = "switch" if previous else "activate"
            self.timings[f"{what}_{kind}"] = took
            self._event("load", kind, model.name, took, previous=previous)
            log.info("model %s (%s) resident on %s after %.3fs (was: %s)", kind, model.name, self.device, took, previous)
            return model

    def _make_room(self) -> None:
        """Free host memory until one more model fits MODEL_HOST_CACHE (idle models first)."""
        limit = max(1, self.settings.model_host_cache)
        while len(self._models) >= limit:
            idle = [k for k in self._models if k != self._resident]
            victim = idle[0] if idle else self._resident
            if victim == self._resident:
                self._offload(victim)
            self._drop(victim)

    def _offload(self, kind: str) -> None:
        model = self._models.get(kind)
        start = time.perf_counter()
        self._resident = None
        if model is not None and is_accelerator(self.device):
            model.to("cpu")
            # Only an accelerator has memory to give back; on the CPU the weights stay put.
            gc.collect()
            empty_accelerator_cache()
        took = time.perf_counter() - start
        self._event("unload", kind, model.name if model else None, took)
        log.info("model %s unloaded from %s in %.3fs", kind, self.device, took)

    def _drop(self, kind: str) -> None:
        model = self._models.pop(kind, None)
        del model
        gc.collect()
        empty_accelerator_cache()

    def _load(self, kind: str) -> Backend:
        spec = self._specs[kind]
        if spec.unavailable:
            raise ModelUnavailable(spec.unavailable)
        start = time.perf_counter()
        try:
            model = self._load_configured(spec)
        except ModelUnavailable:
            raise
        except Exception as exc:
            raise self.classify(exc) from exc
        took = time.perf_counter() - start
        self._models[kind] = model
        self.timings[f"cold_load_{kind}"] = took
        self._event("cold_load", kind, model.name, took)
        log.info("model %s loaded from %s into host memory in %.2fs", kind, spec.path, took)
        return model

    def _load_configured(self, spec: ModelSpec) -> Backend:
        batch = self.settings.model_batch_size
        try:
            path = self.settings.resolve_model(spec.configured)
            model = load_backend(spec.kind, path, batch, self.device)
            spec.effective = model_identity(spec.configured)
            spec.path = path
            return model
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            if _is_out_of_memory(exc):
                raise
            reason = f"{spec.configured} could not be loaded ({_short(exc)})"
        if spec.kind == RERANKER:
            spec.unavailable = f"no reranker available: {reason}"
            log.error("%s; search will return results without reranking", spec.unavailable)
            self._event("unavailable", spec.kind, spec.configured, 0.0, reason=reason)
            raise ModelUnavailable(spec.unavailable)
        fallback = self.settings.fallback_embedder
        if not fallback or fallback == spec.configured:
            spec.unavailable = f"no embedder available: {reason}"
            raise ModelUnavailable(spec.unavailable)
        try:
            path = self.settings.resolve_model(fallback)
            model = load_backend(spec.kind, path, batch, self.device)
        except Exception as exc:
            spec.unavailable = f"no embedder available: {reason}; fallback {fallback} failed too ({_short(exc)})"
            raise ModelUnavailable(spec.unavailable) from exc
        spec.effective = model_identity(fallback)
        spec.path = path
        spec.fallback = True
        note = f"FALLBACK: {reason}; using {spec.effective} instead"
        spec.notes.append(note)
        log.error(note)
        self._event("fallback", spec.kind, spec.effective, 0.0, reason=reason)
        return model

    def classify(self, exc: BaseException) -> BaseException:
        """Turn a library error into a transient or permanent one the tasks understand."""
        if isinstance(exc, (ModelError, BadInput)):
            return exc
        if _is_out_of_memory(exc):
            self.unload()
            return AcceleratorOutOfMemory(_short(exc))
        return ModelLoadError(_short(exc))

    def _event(self, event: str, kind: str, name: str | None, seconds: float, **extra) -> None:
        record = {"event": event, "kind": kind, "model": name, "seconds": round(seconds, 4), "at": time.time(), **extra}
        self.events.append(record)
        del self.events[:-50]
        if self.on_change is not None:
            try:
                self.on_change(self.status())
            except Exception:  # monitoring must never break a task
                log.debug("status publication failed", exc_info=True)


def model_identity(configured: str) -> str:
    """The stable name vectors are recorded under (not a machine-specific path)."""
    if configured == BUNDLED_MODEL:
        return "bundled:all-MiniLM-L6-v2"
    return configured


def _is_out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "out of memory" in text or "outofmemory" in text


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


_manager: ModelManager | None = None


def get_manager() -> ModelManager:
    """The process's model manager (inherited by forked worker children)."""
    global _manager
    if _manager is None:
        _manager = ModelManager()
    return _manager


def status_json(manager: ModelManager | None = None) -> str:
    return json.dumps((manager or get_manager()).status())
