"""The workers' process pool: Celery's prefork pool, replacing a recycled child at once, with
MAX_TASKS_PER_CHILD counted in units of work.

A pool child is replaced after MAX_TASKS_PER_CHILD tasks, so that whatever a model library or
MuPDF leaks is handed back. A new models child imports the model libraries again (seconds), and
the search that arrives meanwhile waits for it. Counting every message would replace the models
child every few dozen searches, because a search sends two small messages (its query embedding and
its rerank) and a long embedding continues in new messages when a search waits. So the count is
weighted: a message of the interactive queue costs INTERACTIVE_TASK_COST (0.05) of a task, and a
continuation (a message with the id of a task this child already counted) costs nothing.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

from celery import signals
from celery.concurrency.asynpool import AsynPool, Worker
from celery.concurrency.prefork import TaskPool

from docenrich.celery_app import INTERACTIVE_QUEUE
from docenrich.config import get_settings

# Celery looks for exited children every 5 s when it misses their exit event; with one pool
# child and max-tasks-per-child recycling, every task queued meanwhile waits for that.
MAINTENANCE_INTERVAL = 0.1
# Task ids remembered to recognise a continuation (it runs right after the message it continues).
RECENT_IDS = 64


@dataclass
class Usage:
    """What this pool child has done, in tasks (weighted), and the ids of the tasks it counted."""

    spent: float = 0.0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT_IDS))

    def charge(self, task_id: str | None, queue: str | None, interactive_cost: float) -> float:
        """Count one finished message; returns what it cost."""
        if task_id is not None and task_id in self.recent:
            return 0.0
        if task_id is not None:
            self.recent.append(task_id)
        cost = interactive_cost if queue == INTERACTIVE_QUEUE else 1.0
        self.spent += cost
        return cost


# This process's usage: zero in the parent, so every forked child starts from zero.
usage = Usage()


class TaskBudget(int):
    """MAX_TASKS_PER_CHILD as billiard's pool child sees it, answering from the weighted usage.

    The child's loop runs `while maxtasks and completed < maxtasks` and exits with
    `EX_RECYCLE if completed == maxtasks`. For an int subclass that overrides the reflected
    comparison, Python asks the subclass first, so both questions are answered from `usage.spent`
    instead of the plain count of messages. Everywhere else (stats, `celery inspect`) it is the int.
    """

    def __gt__(self, completed):  # the loop's `completed < maxtasks`
        return usage.spent < int(self)

    def __eq__(self, completed):  # `completed == maxtasks`: the child leaves because its budget is spent
        return usage.spent >= int(self) if isinstance(completed, int) else NotImplemented

    __hash__ = int.__hash__


@signals.task_postrun.connect
def _charge(task_id=None, task=None, **_):
    queue = ((getattr(task, "request", None) and task.request.delivery_info) or {}).get("routing_key")
    usage.charge(task_id, queue, get_settings().interactive_task_cost)


class BudgetWorker(Worker):
    """The pool child's loop, with its MAX_TASKS_PER_CHILD counted in units of work."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # billiard checks that the limit is a plain int
        if self.maxtasks:
            self.maxtasks = TaskBudget(self.maxtasks)


class QuickReapAsynPool(AsynPool):
    """AsynPool that reaps exited children every 0.1 s and counts their tasks in units of work."""

    Worker = BudgetWorker

    @property
    def timers(self):
        return {self.maintain_pool: MAINTENANCE_INTERVAL}


class RecyclingTaskPool(TaskPool):
    """Prefork task pool using QuickReapAsynPool (`--pool=custom`, CELERY_CUSTOM_WORKER_POOL)."""

    Pool = QuickReapAsynPool
