"""Worker lifecycle: preload in the parent, reset in each pool child, publish model status,
queue recovery on every (re)connect."""
from __future__ import annotations

import gc
import json
import logging
import time

from celery import bootsteps, signals

from docenrich import models, telemetry
from docenrich.celery_app import MODEL_STATUS_KEY, celery_app
from docenrich.config import get_settings
from docenrich.tasks.base import redis_client

log = logging.getLogger(__name__)

# This worker's node name, known once Celery has started it.
_hostname = "unknown"


def _publish_status(status: dict) -> None:
    status = {**status, "hostname": _hostname, "published_at": time.time()}
    redis_client().set(MODEL_STATUS_KEY.format(hostname=_hostname), json.dumps(status), ex=24 * 3600)


def _safe_publish(status: dict) -> None:
    try:
        _publish_status(status)
    except Exception:
        log.warning("could not publish model status", exc_info=True)


def _record_model_event(event: dict) -> None:
    try:
        telemetry.record_model_event(redis_client(), event)
    except Exception:
        log.debug("could not record a model event", exc_info=True)


# Start times of the tasks running in this process, by task id.
_started: dict[str, float] = {}


@signals.task_prerun.connect
def _task_started(task_id=None, **_):
    _started[task_id] = time.perf_counter()


@signals.task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **_):
    started = _started.pop(task_id, None)
    if started is None or task is None:
        return
    try:
        telemetry.record_task(redis_client(), task.name, time.perf_counter() - started, state or "UNKNOWN")
    except Exception:  # monitoring must never fail a task
        log.debug("could not record the duration of %s", task.name, exc_info=True)


@signals.worker_init.connect
def _prepare_parent(sender=None, **_):
    # Runs once in the worker's main process, before it forks the pool child: the slow
    # imports (and the weights, in host memory) are then inherited by every child, so
    # max-tasks-per-child recycling costs a fork, not an import and a load from disk.
    global _hostname
    _hostname = getattr(sender, "hostname", None) or "unknown"
    settings = get_settings()
    if settings.docenrich_worker_role == "docs":
        return
    start = time.perf_counter()
    models.import_model_libraries()
    log.info("model libraries imported in %.2fs", time.perf_counter() - start)
    manager = models.get_manager()
    manager.on_change = _safe_publish
    manager.on_event = _record_model_event
    if settings.model_preload:
        manager.preload_host()
    # Celery runs gc.collect() before every fork; frozen, the imported libraries and the
    # preloaded weights are not scanned each time a child is recycled.
    gc.freeze()
    _safe_publish(manager.status())


@signals.worker_process_init.connect
def _prepare_child(**_):
    manager = models.get_manager()
    manager.reset_after_fork()
    manager.on_change = _safe_publish
    manager.on_event = _record_model_event
    _safe_publish(manager.status())


class RecoverDocuments(bootsteps.StartStopStep):
    """Queue document recovery each time this worker (re)connects to the broker, whatever its role.

    A worker killed outright, or a Redis restart, leaves the message it was running in
    Redis' unacked set until the visibility timeout (~40 min), and a Redis crash may lose
    the last second of queued messages. The store knows which page batches are missing,
    so recovery re-queues them at once (stored batches are skipped). `worker_ready` fires
    only at the first start, and a model worker must trigger it too: the lost message may
    be an embedding whose link stores the batch.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer):
        try:
            celery_app.send_task("docenrich.recover_documents")
        except Exception:
            log.warning("could not queue document recovery", exc_info=True)


celery_app.steps["consumer"].add(RecoverDocuments)


@signals.worker_shutdown.connect
def _forget_status(**_):
    try:
        redis_client().delete(MODEL_STATUS_KEY.format(hostname=_hostname))
    except Exception:
        pass
