"""Running a converter as a subprocess in its own process group, under a time limit, killed whole on overrun."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess

from .errors import FormatError

log = logging.getLogger(__name__)

MAX_OUTPUT = 64 * 1024  # what is kept of a converter's console output, for logs and errors


def run_bounded(command: list[str], timeout: float, *, env: dict | None = None, cwd: str | None = None,
                what: str = "The conversion") -> tuple[int, str]:
    """(exit code, last of its output) of a command; FormatError("timeout") when it overruns `timeout` s."""
    # Its own session: on overrun the whole group goes (soffice starts soffice.bin, which would outlive a kill
    # of its parent alone). No stdin: a converter never waits on a question.
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env, cwd=cwd, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=max(0.01, timeout))
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise FormatError("timeout", f"{what} took longer than {timeout:g} s (CONVERT_TIMEOUT), so it was "
                                     f"stopped; split the file or simplify it and upload it again.") from None
    except BaseException:  # a task's time limit or an interrupt: leave no converter behind
        _kill_group(process)
        raise
    finally:
        _kill_group(process, only_leftovers=True)
    return process.returncode, output[-MAX_OUTPUT:].decode("utf-8", errors="replace")


def _kill_group(process: subprocess.Popen, only_leftovers: bool = False) -> None:
    """Kill the process group (what a converter started and left running, too) and reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if not only_leftovers:
        with contextlib.suppress(Exception):
            process.communicate(timeout=10)
