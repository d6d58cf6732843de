"""The rule "at most one model on the accelerator": loading, host caching, swapping.

Models load into host memory and only the one in use sits on the device. torch and the
model libraries are imported when a model is loaded; the worker's parent process imports
them (and may load weights into host memory) before forking, without ever touching CUDA.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from docenrich.config import Settings, get_settings
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
)
from docenrich.models.errors import (
    AcceleratorOutOfMemory,
    BadInput,
    ModelError,
    ModelLoadError,
    ModelUnavailable,
    describe,
    is_out_of_memory,
)
from docenrich.models.registry import import_model_libraries, load_backend, model_identity

log = logging.getLogger(__name__)


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
        self._models: dict[str, LoadedModel] = {}  # host cache, the resident one included
        self._resident: str | None = None
        self._specs = {
            EMBEDDER: ModelSpec(EMBEDDER, self.settings.embedder_model),
            RERANKER: ModelSpec(RERANKER, self.settings.reranker_model),
        }
        self.timings: dict[str, float] = {}
        self.events: list[dict[str, Any]] = []
        # Set by the worker to publish the status whenever a model moves.
        self.on_change: Callable[[dict[str, Any]], None] | None = None
        self._changed = False
        # Set by the worker to count loads and switches; recorded after the lock is released.
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        self._pending_events: list[dict[str, Any]] = []

    # -- public ------------------------------------------------------------------

    @property
    def device(self) -> str:
        """The concrete device models run on, resolved on first use."""
        if self._device is None:
            self._device = resolve_device(self._requested_device)
        return self._device

    def embedder(self) -> Embedder:
        """The embedder, resident on the device (the reranker is moved off first)."""
        return cast(Embedder, self._acquire(EMBEDDER))

    def reranker(self) -> Reranker:
        """The reranker, resident on the device (the embedder is moved off first)."""
        return cast(Reranker, self._acquire(RERANKER))

    def effective_name(self, kind: str) -> str | None:
        """The name vectors of this kind are recorded under, once a model is loaded."""
        return self._specs[kind].effective

    def preload_host(self, kinds: tuple[str, ...] = KINDS) -> None:
        """Import the model libraries and load weights into host memory only (the device gets them on
        first use); never touches CUDA."""
        with self._locked():
            # Under the lock: a task importing the same libraries from another thread at the same
            # moment can see a half-initialised module (CPython breaks the import-lock cycle that way).
            import_model_libraries()
            for kind in kinds:
                if kind in self._models or self._specs[kind].unavailable:
                    continue
                try:
                    self._load(kind)
                except ModelError as exc:
                    log.warning("preload of the %s skipped: %s", kind, exc)

    def unload(self) -> None:
        """Move the resident model off the device and free accelerator memory."""
        with self._locked():
            if self._resident is not None:
                self._offload(self._resident)

    def clear(self) -> None:
        """Drop every model, host copies included."""
        with self._locked():
            self.unload()
            for kind in list(self._models):
                self._drop(kind)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The model lock; status changes made under it are published after it is released."""
        with self._lock:
            yield
        self._publish_changes()

    def _publish_changes(self) -> None:
        # Outside the lock (also when an outer call still holds it, publish later): a slow or
        # unreachable Redis must never keep a search waiting for the model.
        if not self._changed or self._lock._is_owned():
            return
        self._changed = False
        events, self._pending_events = self._pending_events, []
        for record in events if self.on_event is not None else ():
            try:
                self.on_event(record)
            except Exception:  # monitoring must never break a task
                log.debug("event recording failed", exc_info=True)
        if self.on_change is None:
            return
        try:
            self.on_change(self.status())
        except Exception:  # monitoring must never break a task
            log.debug("status publication failed", exc_info=True)

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
                "models": {kind: self._model_status(kind, spec) for kind, spec in self._specs.items()},
                "timings": dict(self.timings),
            }

    def classify(self, exc: BaseException) -> BaseException:
        """Turn a library error into a transient or permanent one the tasks understand."""
        if isinstance(exc, (ModelError, BadInput)):
            return exc
        if is_out_of_memory(exc):
            self.unload()
            return AcceleratorOutOfMemory(describe(exc))
        return ModelLoadError(describe(exc))

    # -- residency ---------------------------------------------------------------

    def _acquire(self, kind: str) -> LoadedModel:
        with self._locked():
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

    # -- loading -----------------------------------------------------------------

    def _load(self, kind: str) -> LoadedModel:
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

    def _load_configured(self, spec: ModelSpec) -> LoadedModel:
        """The configured model, else (embedders only) the fallback embedder."""
        try:
            path = self.settings.resolve_model(spec.configured)
            model = load_backend(spec.kind, path, self.settings.model_batch_size, self.device)
            spec.effective = model_identity(spec.configured)
            spec.path = path
            return model
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            if is_out_of_memory(exc):
                raise
            reason = f"{spec.configured} could not be loaded ({describe(exc)})"
        if spec.kind == RERANKER:
            spec.unavailable = f"no reranker available: {reason}"
            log.error("%s; search will return results without reranking", spec.unavailable)
            self._event("unavailable", spec.kind, spec.configured, 0.0, reason=reason)
            raise ModelUnavailable(spec.unavailable)
        return self._load_fallback(spec, reason)

    def _load_fallback(self, spec: ModelSpec, reason: str) -> LoadedModel:
        """The fallback embedder in place of a configured one that failed, announced loudly."""
        fallback = self.settings.fallback_embedder
        if not fallback or fallback == spec.configured:
            spec.unavailable = f"no embedder available: {reason}"
            raise ModelUnavailable(spec.unavailable)
        try:
            path = self.settings.resolve_model(fallback)
            model = load_backend(spec.kind, path, self.settings.model_batch_size, self.device)
        except Exception as exc:
            spec.unavailable = f"no embedder available: {reason}; fallback {fallback} failed too ({describe(exc)})"
            raise ModelUnavailable(spec.unavailable) from exc
        spec.effective = model_identity(fallback)
        spec.path = path
        spec.fallback = True
        note = f"FALLBACK: {reason}; using {spec.effective} instead"
        spec.notes.append(note)
        log.error(note)
        self._event("fallback", spec.kind, spec.effective, 0.0, reason=reason)
        return model

    # -- monitoring --------------------------------------------------------------

    def _model_status(self, kind: str, spec: ModelSpec) -> dict[str, Any]:
        model = self._models.get(kind)
        return {
            "configured": spec.configured,
            "effective": spec.effective,
            "fallback": spec.fallback,
            "unavailable": spec.unavailable,
            "dim": model.dim if model is not None else None,
            "library": model.library if model is not None else None,
            "notes": spec.notes,
        }

    def _event(self, event: str, kind: str, name: str | None, seconds: float, **extra: Any) -> None:
        record = {"event": event, "kind": kind, "model": name, "seconds": round(seconds, 4), "at": time.time(), **extra}
        self.events.append(record)
        del self.events[:-50]
        self._pending_events.append(record)
        self._changed = True  # published by _locked once the lock is released


_manager: ModelManager | None = None


def get_manager() -> ModelManager:
    """The process's model manager (inherited by forked worker children)."""
    global _manager
    if _manager is None:
        _manager = ModelManager()
    return _manager
