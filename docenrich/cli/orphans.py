"""No orphans: children of `docenrich run` end when it dies, however it dies."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to send the child `sig` when this process dies (even by SIGKILL).

    None where prctl is missing (not Linux): there, the children outlive a killed supervisor.
    """
    name = ctypes.util.find_library("c")
    if not name or not hasattr(os, "getppid"):
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def follow_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send this process `sig` when its parent dies (a pool child whose worker died)."""
    name = ctypes.util.find_library("c")
    if name:
        ctypes.CDLL(name, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until the process has exited; False when it is still there after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
