"""The errors the model layer raises, importable without torch or the model libraries.

The web process and the public API import these classes to recognise a worker's failure,
so this module must stay free of heavy imports.
"""
from __future__ import annotations


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


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether a library error says the device (or host) ran out of memory."""
    text = f"{type(exc).__name__} {exc}".lower()
    return "out of memory" in text or "outofmemory" in text


def describe(exc: BaseException) -> str:
    """The exception's type and first line, short enough for a status page or a log line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"
