"""The model worker's process pool: Celery's prefork pool, replacing a recycled child at once."""
from __future__ import annotations

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool

# Celery looks for exited children every 5 s when it misses their exit event; with one pool
# child and max-tasks-per-child recycling, every task queued meanwhile waits for that.
MAINTENANCE_INTERVAL = 0.1


class QuickReapAsynPool(AsynPool):
    """AsynPool that reaps exited children and forks replacements every 0.1 s."""

    @property
    def timers(self):
        return {self.maintain_pool: MAINTENANCE_INTERVAL}


class RecyclingTaskPool(TaskPool):
    """Prefork task pool using QuickReapAsynPool (`--pool=custom`, CELERY_CUSTOM_WORKER_POOL)."""

    Pool = QuickReapAsynPool
