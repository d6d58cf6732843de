"""What the benchmark workers logged: per-task times measured inside the worker, recycles, hand-offs."""
from __future__ import annotations

import re
from collections.abc import Iterable

SUCCESS_LINE = re.compile(r"Task (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]+)\] succeeded in (?P<s>[0-9.e-]+)s")


class LogWindow:
    """The `succeeded in` lines a worker logs from now on: per-task times measured inside the worker."""

    def __init__(self, worker):
        self.worker = worker
        self.offset = len(worker.log_text())

    def runtimes(self) -> list[tuple[str, str, float]]:
        """(task name, task id, seconds) of every task that succeeded since the window opened."""
        text = self.worker.log_text()[self.offset:]
        return [(m["name"], m["id"], float(m["s"])) for m in SUCCESS_LINE.finditer(text)]

    def by_id(self, ids: Iterable[str]) -> dict[str, float]:
        wanted = set(ids)
        return {task_id: s for _, task_id, s in self.runtimes() if task_id in wanted}

    def recycles(self) -> int:
        """Pool children replaced since the window opened (each logs as a new ForkPoolWorker-N)."""
        text = self.worker.log_text()[self.offset:]
        return max(0, len(set(re.findall(r"/ForkPoolWorker-(\d+)\]", text))) - 1)

    def durations(self, name: str) -> list[float]:
        """Seconds of each run of the task called `name`."""
        return [s for task, _, s in self.runtimes() if task == name]

    def ignored(self, name: str) -> list[str]:
        """Ids of the runs of `name` that ended by handing their rest to a new message."""
        text = self.worker.log_text()[self.offset:]
        return re.findall(rf"Task {re.escape(name)}\[([^\]]+)\] ignored", text)

    def by_name(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, _, s in self.runtimes():
            totals[name] = totals.get(name, 0.0) + s
        return totals


class LogWindows:
    """LogWindow over several workers at once (a model worker and a docs worker)."""

    def __init__(self, workers):
        self.windows = [LogWindow(w) for w in workers]

    def runtimes(self) -> list[tuple[str, str, float]]:
        return [r for w in self.windows for r in w.runtimes()]

    def recycles(self) -> int:
        return sum(w.recycles() for w in self.windows)

    def by_name(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, _, seconds in self.runtimes():
            totals[name] = totals.get(name, 0.0) + seconds
        return totals
