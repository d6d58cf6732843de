"""Keep a process's share of the mapped vector files small: drop its mapped pages past a budget.

A search touches pages of the mapped files (the HNSW graph's nodes, the float32 rows it rescores),
and Linux counts every touched page of a mapping in the process's RSS for as long as it stays
mapped, so a web process that has answered enough searches shows the whole index in its RSS,
though the pages are the page cache's, shared by every process. Past a budget, the process gives
its mappings of the index files back with madvise(MADV_DONTNEED): for a read-only file mapping
that only drops the page-table entries, so the data stays in the page cache, the next search
faults the pages it needs back in (minor faults, no disk read while the cache holds them), and
a concurrent search in another thread reads the same bytes either way.
"""
from __future__ import annotations

import ctypes
import logging
import mmap
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)
_libc = None


def resident_bytes() -> int:
    """This process's RSS in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def mapped_ranges(folder: Path) -> list[tuple[int, int]]:
    """(start, end) of this process's read-only mappings of files under folder."""
    prefix = str(folder.resolve()) + os.sep
    ranges = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith(prefix) and "w" not in parts[1]:
                    start, _, end = parts[0].partition("-")
                    ranges.append((int(start, 16), int(end, 16)))
    except OSError:
        return []
    return ranges


def release(folder: Path) -> int:
    """Drop this process's resident pages of its read-only mappings under folder; how many ranges."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    done = 0
    for start, end in mapped_ranges(folder):
        if _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED) == 0:
            done += 1
        else:
            log.debug("madvise of %x-%x failed: errno %d", start, end, ctypes.get_errno())
    return done


class PageBudget:
    """Releases the mapped pages of a folder's files when the process has grown by more than budget bytes
    since the last release (0: never)."""

    def __init__(self, budget: int):
        """A budget of this many bytes of growth."""
        self.budget = int(budget)
        self._floor = resident_bytes()
        self._lock = threading.Lock()

    def check(self, folder: Path) -> bool:
        """Release the mappings of files under folder if over budget (call after a search); whether it did."""
        if self.budget <= 0 or not self._lock.acquire(blocking=False):
            return False
        try:
            if resident_bytes() - self._floor <= self.budget:
                return False
            release(folder)
            # What remains is the process's own memory: growth of that resets the floor, not the files.
            self._floor = resident_bytes()
            return True
        finally:
            self._lock.release()
