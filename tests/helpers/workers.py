"""Worker subprocesses (`python start_celery_worker.py`) with their own logs, and finding the
processes a test started."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import kombu.exceptions
import redis

from tests.helpers.env import ROOT, SESSION_DIR, TEST_ENV
from tests.helpers.wait import wait_for


class WorkerProcess:
    """A `python start_celery_worker.py` subprocess with its own log, always torn down."""

    def __init__(self, name: str, env: dict[str, str] | None = None, args: list[str] | None = None):
        self.name = name
        self.log_path = SESSION_DIR / f"{name}.log"
        self.env = {**os.environ, **TEST_ENV, "WORKER_LOG_FILE": str(self.log_path), **(env or {})}
        # The misbehaving test tasks ride along in every test worker.
        self.args = ["--include=tests.fault_tasks", *(args or [])]
        self.process: subprocess.Popen | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@test"

    def start(self, app, timeout: float = 120.0) -> WorkerProcess:
        cmd = [sys.executable, str(ROOT / "start_celery_worker.py"), f"--name={self.hostname}", *self.args]
        self.process = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for(lambda: self._answers(app), timeout, 0.5, f"worker {self.hostname} to answer ping")
        except TimeoutError:
            self.stop()
            raise AssertionError(f"worker did not start; log:\n{self.log_tail()}") from None
        return self

    def _answers(self, app) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}; log:\n{self.log_tail()}")
        try:
            replies = app.control.ping(destination=[self.hostname], timeout=0.5) or []
        except (ConnectionError, OSError, redis.exceptions.ConnectionError, kombu.exceptions.OperationalError):
            # A pooled broker connection can be dropped while a busy machine starts the worker;
            # the next poll takes a fresh one.
            return False
        return any(self.hostname in reply for reply in replies)

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def status(self, app) -> dict:
        raw = app.backend.client.hget("docenrich:model-status", self.hostname)
        return json.loads(raw) if raw else {}

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def kill(self) -> None:
        """SIGKILL the worker and its pool child at once, as a crash would."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def received(log_text: str, task: str) -> int:
    """How many messages of a task (docenrich.<task>) a worker received, from its log."""
    return len(re.findall(rf"Task docenrich\.{task}\[[^\]]+\] received", log_text))


def processes_with(marker: str) -> list[int]:
    """Pids of processes whose environment mentions marker (a unique temp path of this test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found
