"""A lock file held by this process: the kernel drops it when the process dies, however it dies.

The pid written inside is for people; the lock decides. After a crash or a reboot the old number
may belong to any process, so it proves nothing.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class LockBusy(Exception):
    """Another process holds the lock; `pid` is what it wrote in the file ("?" when nothing)."""

    def __init__(self, pid: str):
        super().__init__(pid)
        self.pid = pid


def take_lock(path: Path) -> IO[str]:
    """The open lock file, locked exclusively with this process's pid in it; LockBusy otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise LockBusy(pid) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
