"""The base of every docenrich task: bounded retries with backoff, and a cap on redeliveries."""
from __future__ import annotations

import logging

from celery import Task
from celery.app.task import get_actual_ignore_result
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from docenrich.celery_app import celery_app
from docenrich.config import get_settings
from docenrich.errors import caused_by
from docenrich.keys import DELIVERY_KEY, DELIVERY_TTL
from docenrich.models.errors import BadInput, ModelError, ModelUnavailable
from docenrich.pdf.errors import PDFError
from docenrich.storage.base import TransientStorageError

log = logging.getLogger(__name__)


# Losing Redis (the broker) mid-task: worth a retry, never the document's fault.
CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OperationalError, ConnectionError)


class WorkerLostTooOften(RuntimeError):
    """The task killed its worker on every delivery; it is failed instead of looping."""


def redis_client():
    """The Redis client of the result backend (the same server as the broker)."""
    return celery_app.backend.client


class DocenrichTask(Task):
    """Base task: bounded retries with exponential backoff and jitter, a delivery cap."""

    abstract = True
    # A busy, locked or restarting database is retried by every task, never the document's fault.
    autoretry_for = (ModelError, TransientStorageError, *CONNECTION_ERRORS)
    dont_autoretry_for = (ModelUnavailable, BadInput, PDFError, WorkerLostTooOften, SoftTimeLimitExceeded)
    # Expected failures: logged as one line, without a traceback.
    throws = (ModelUnavailable, BadInput, PDFError)
    max_retries = get_settings().task_max_retries
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True
    # The worker log shows each result's repr: an array of vectors is cut short, not printed whole.
    resultrepr_maxsize = 200

    def __call__(self, *args, **kwargs):
        counted = not self.request.called_directly and bool(self.request.id)
        if counted:
            self._count_delivery()
        try:
            return super().__call__(*args, **kwargs)
        except (Ignore, Retry):
            # Over in this child without after_return: a retry counts under a new key, a
            # continuation (Task.replace) under its own part.
            if counted:
                self._forget_delivery()
            raise

    def update_state(self, task_id=None, state=None, meta=None, **kwargs):
        """Progress for a caller that waits; a task whose result nobody reads writes none to Redis."""
        if task_id is None and get_actual_ignore_result(self, self.request):
            return None
        return super().update_state(task_id, state, meta, **kwargs)

    def _delivery_key(self) -> str:
        # A task that continues itself in a new message (Task.replace) keeps its id: each part counts apart.
        return DELIVERY_KEY.format(task_id=self.request.id, retries=self.request.retries,
                                   part=self.request.get("replaced_task_nesting") or 0)

    def after_return(self, status, retval, task_id, args, kwargs, einfo) -> None:
        # The task ended in this child: its delivery count has done its job.
        if not self.request.called_directly and self.request.id:
            self._forget_delivery()
        super().after_return(status, retval, task_id, args, kwargs, einfo)

    def _forget_delivery(self) -> None:
        try:
            redis_client().delete(self._delivery_key())
        except (RedisConnectionError, RedisTimeoutError):
            pass  # it expires

    def _count_delivery(self) -> None:
        # acks_late + reject_on_worker_lost redeliver a task whose worker died; one that
        # kills its worker every time would loop forever without this count.
        key = self._delivery_key()
        try:
            client = redis_client()
            count = client.incr(key)
            client.expire(key, DELIVERY_TTL)
        except (RedisConnectionError, RedisTimeoutError):
            return
        cap = get_settings().task_max_deliveries
        if count > cap:
            raise WorkerLostTooOften(
                f"the worker died {count - 1} times while running this task; giving up after {cap} deliveries"
            )


def is_connection_loss(exc: BaseException | None) -> bool:
    """Lost Redis: also when a retry could not be published (Celery then rejects the message
    with the connection error as its reason) or the exception was rebuilt under another class."""
    from docenrich.errors import exception_chain

    names = {cls.__name__ for cls in CONNECTION_ERRORS}
    for e in exception_chain(exc):
        reason = e.reason if isinstance(e, Reject) else None
        if isinstance(e, CONNECTION_ERRORS) or type(e).__name__ in names or (
            isinstance(reason, BaseException) and is_connection_loss(reason)
        ):
            return True
    return False


def is_time_limit(exc: BaseException | None) -> bool:
    """A time limit, also when it struck inside a library that wrapped it (kombu's EncodeError
    while a batch is serialised for the model worker)."""
    return caused_by(exc, (TimeLimitExceeded, SoftTimeLimitExceeded))
