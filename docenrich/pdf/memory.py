"""Giving a long-lived docs process's native memory back between tasks."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

import pymupdf

log = logging.getLogger(__name__)

_libc: ctypes.CDLL | None = None


def _malloc_trim() -> None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
    trim = getattr(_libc, "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def release_native_memory() -> None:
    """Empty MuPDF's resource store and return the C heap's free pages to the system."""
    try:
        # MuPDF keeps fonts, images and parsed objects of closed documents in a store of up to
        # 256 MB; the next task opens another PDF, so they only raise the child's RSS.
        pymupdf.TOOLS.store_shrink(100)
        _malloc_trim()
    except Exception:  # memory housekeeping must never fail a task
        log.debug("could not release native memory", exc_info=True)
