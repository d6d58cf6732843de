"""The workers' process pool: Celery's prefork pool, replacing a recycled child at once, with
MAX_TASKS_PER_CHILD counted in units of work.

A pool child is replaced after MAX_TASKS_PER_CHILD tasks, so that whatever a model library or
MuPDF leaks is handed back. A new models child imports the model libraries again (seconds), and
the search that arrives meanwhile waits for it. Counting every message would replace the models
child every few dozen searches, because a search sends two small messages (its query embedding and
its rerank) and a long embedding continues in new messages when a search waits. So the count is
weighted: a message of the interactive queue costs INTERACTIVE_TASK_COST (0.05) of a task, and a
continuation (the rest of a task, sent by `Task.replace`) costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

from celery import signals
from celery.concurrency.asynpool import AsynPool, Worker
from celery.concurrency.prefork import TaskPool

from docenrich.celery_app import INTERACTIVE_QUEUE
from docenrich.config import get_settings

# Celery looks for exited children every 5 s when it misses their exit event; with one pool
# child and max-tasks-per-child recycling, every task queued meanwhile waits for that.
MAINTENANCE_INTERVAL = 0.1
# Work is counted in thousandths of a task: twenty 0.05s make exactly one.
MILLI = 1000


@dataclass
class Usage:
    """What this pool child has done, in thousandths of a task (weighted)."""

    spent: int = 0

    def charge(self, queue: str | None, continued: bool, interactive_cost: float) -> float:
        """Count one finished message; returns what it cost, in tasks."""
        if continued:
            return 0.0
        cost = interactive_cost if queue == INTERACTIVE_QUEUE else 1.0
        self.spent += round(cost * MILLI)
        return cost

    def left(self, budget: int) -> bool:
        """Whether this child may run another message within `budget` tasks."""
        return self.spent < budget * MILLI


# This process's usage: zero in the parent, so every forked child starts from zero.
usage = Usage()


class TaskBudget(int):
    """MAX_TASKS_PER_CHILD as billiard's pool child sees it, answering from the weighted usage.

    The child's loop runs `while maxtasks and completed < maxtasks` and exits with
    `EX_RECYCLE if completed == maxtasks`. For an int subclass that overrides the reflected
    comparison, Python asks the subclass first, so both questions are answered from `usage.spent`
    instead of the plain count of messages. It exists only in the pool child (set as its loop
    starts); the pool and `celery inspect stats` keep the plain int.
    """

    def __gt__(self, completed):  # the loop's `completed < maxtasks`
        return usage.left(int(self))

    def __eq__(self, completed):  # `completed == maxtasks`: the child leaves because its budget is spent
        return not usage.left(int(self)) if isinstance(completed, int) else NotImplemented

    __hash__ = int.__hash__


def interactive_cost(raw: float) -> float:
    """INTERACTIVE_TASK_COST checked: between 0 and 1."""
    if not 0.0 <= raw <= 1.0:  # also refuses NaN
        raise ValueError(f"INTERACTIVE_TASK_COST must be between 0 and 1 (got {raw})")
    return raw


@signals.task_postrun.connect
def _charge(task=None, **_):
    request = getattr(task, "request", None)
    queue = ((request and request.delivery_info) or {}).get("routing_key")
    continued = bool(request and request.get("replaced_task_nesting", 0))
    usage.charge(queue, continued, interactive_cost(get_settings().interactive_task_cost))


class BudgetWorker(Worker):
    """The pool child's loop, with its MAX_TASKS_PER_CHILD counted in units of work."""

    def on_loop_start(self, pid):
        # In the child, just before the loop reads its limit (billiard wants a plain int before).
        if self.maxtasks:
            self.maxtasks = TaskBudget(self.maxtasks)
        super().on_loop_start(pid)


class QuickReapAsynPool(AsynPool):
    """AsynPool that reaps exited children every 0.1 s and counts their tasks in units of work."""

    Worker = BudgetWorker

    @property
    def timers(self):
        return {self.maintain_pool: MAINTENANCE_INTERVAL}


class RecyclingTaskPool(TaskPool):
    """Prefork task pool using QuickReapAsynPool (`--pool=custom`, CELERY_CUSTOM_WORKER_POOL)."""

    Pool = QuickReapAsynPool
