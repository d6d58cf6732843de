"""Worker lifecycle: models loaded in each pool child (never in the parent), publish model status,
beat a heartbeat, queue recovery on every (re)connect and now and then."""
from __future__ import annotations

import gc
import json
import logging
import signal
import threading
import time

from celery import bootsteps, signals

from docenrich import leases, models, telemetry
from docenrich.celery_app import MODEL_STATUS_KEY, celery_app
from docenrich.cli.orphans import follow_parent
from docenrich.config import get_settings
from docenrich.keys import SWEEP_KEY
from docenrich.tasks.base import redis_client

log = logging.getLogger(__name__)

# This worker's node name, known once Celery has started it.
_hostname = "unknown"
# At most one recovery sweep per this many seconds, whichever worker sends it.
SWEEP_INTERVAL = 20


def _publish_status(status: dict) -> None:
    # The heartbeat says whether this worker is alive; the status says what it holds.
    status = {**status, "hostname": _hostname, "worker": leases.worker_id(), "published_at": time.time()}
    redis_client().hset(MODEL_STATUS_KEY, _hostname, json.dumps(status))


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
# In a docs pool child: what to call after each task to hand native memory back.
_after_task = None


@signals.task_prerun.connect
def _task_started(task_id=None, **_):
    _started[task_id] = time.perf_counter()


@signals.task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **_):
    if _after_task is not None:
        _after_task()
    started = _started.pop(task_id, None)
    if started is None or task is None:
        return
    try:
        telemetry.record_task(redis_client(), task.name, time.perf_counter() - started, state or "UNKNOWN")
    except Exception:  # monitoring must never fail a task
        log.debug("could not record the duration of %s", task.name, exc_info=True)


@signals.worker_init.connect
def _prepare_parent(sender=None, **_):
    # Runs once in the worker's main process, before it forks the pool child. Nothing that
    # starts native thread pools (torch, onnxruntime, OpenMP) is imported here: a child forked
    # from a parent that holds their threads' locks can wait on them forever. Models load in
    # the child (see _prepare_child).
    global _hostname
    _hostname = getattr(sender, "hostname", None) or "unknown"
    leases.set_worker(_hostname)  # before the fork: pool children name the same worker run
    # Celery runs gc.collect() before every fork; frozen, what the parent imported is not
    # scanned each time a child is recycled.
    gc.freeze()


@signals.worker_process_init.connect
def _prepare_child(**_):
    # A pool child whose worker died (killed with its supervisor) ends too: its task goes
    # back to the queue through recovery, as after a power loss.
    follow_parent(signal.SIGKILL)
    settings = get_settings()
    if settings.docenrich_worker_role == "docs":
        global _after_task
        from docenrich.pdf.memory import release_native_memory

        _after_task = release_native_memory
        return
    manager = models.get_manager()
    manager.reset_after_fork()
    manager.on_change = _safe_publish
    manager.on_event = _record_model_event
    _safe_publish(manager.status())
    if settings.model_preload:
        # Celery gives a new child a few seconds to report ready: the import and the load run
        # beside it, and the first task waits for them on the manager's lock.
        threading.Thread(target=_preload, args=(manager,), name="docenrich-preload", daemon=True).start()


def _preload(manager) -> None:
    start = time.perf_counter()
    try:
        manager.preload_host()
    except Exception:
        log.warning("model preload failed; models load on first use", exc_info=True)
        return
    log.info("model libraries and weights loaded in the pool child in %.2fs", time.perf_counter() - start)
    _safe_publish(manager.status())


class Heartbeat(bootsteps.StartStopStep):
    """Beat every few seconds from the worker's main process, before any message is consumed.

    A worker that stops beating (killed, frozen, cut off) counts as gone after
    leases.HEARTBEAT_TTL seconds: the pages stop showing it and its batches are free to be
    taken. The same thread queues a recovery sweep now and then (one per SWEEP_INTERVAL across
    all workers), which re-queues the batches of workers that died while others kept running.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)
    _thread: threading.Thread | None = None
    _stop = threading.Event()

    def start(self, consumer):
        _beat_once()
        if Heartbeat._thread is None or not Heartbeat._thread.is_alive():
            Heartbeat._stop.clear()
            Heartbeat._thread = threading.Thread(target=_beat_forever, name="docenrich-heartbeat", daemon=True)
            Heartbeat._thread.start()

    def shutdown(self, consumer):
        Heartbeat._stop.set()


def _beat_once() -> None:
    try:
        leases.beat(redis_client(), leases.worker_id())
    except Exception as exc:
        log.warning("heartbeat failed: %s", exc)


def _beat_forever() -> None:
    last_sweep = time.monotonic()
    while not Heartbeat._stop.wait(leases.HEARTBEAT_INTERVAL):
        _beat_once()
        if time.monotonic() - last_sweep >= SWEEP_INTERVAL:
            last_sweep = time.monotonic()
            try:
                if redis_client().set(SWEEP_KEY, leases.worker_id(), nx=True, ex=SWEEP_INTERVAL):
                    # A sweep waiting longer than the interval is superseded by the next one.
                    celery_app.send_task("docenrich.recover_documents", expires=SWEEP_INTERVAL * 3)
            except Exception as exc:
                log.warning("could not queue a recovery sweep: %s", exc)


class RecoverDocuments(bootsteps.StartStopStep):
    """Queue document recovery each time this worker (re)connects to the broker, whatever its role.

    A worker killed outright, or a Redis restart, leaves the message it was running in
    Redis' unacked set until the visibility timeout (~40 min), and a Redis crash may lose
    the last second of queued messages. The store knows which page batches are missing and
    the leases which of those a live worker or the broker holds, so recovery re-queues only
    the others (stored and held batches are skipped, however many workers ask). `worker_ready` fires
    only at the first start, and a model worker must trigger it too: the lost message may
    be an embedding whose link stores the batch.
    """

    requires = (Heartbeat,)

    def start(self, consumer):
        try:
            celery_app.send_task("docenrich.recover_documents", expires=SWEEP_INTERVAL * 3)
        except Exception:
            log.warning("could not queue document recovery", exc_info=True)


celery_app.steps["consumer"].add(Heartbeat)
celery_app.steps["consumer"].add(RecoverDocuments)


@signals.worker_shutdown.connect
def _forget_status(**_):
    Heartbeat._stop.set()
    try:
        client = redis_client()
        leases.forget(client, leases.worker_id())
        client.hdel(MODEL_STATUS_KEY, _hostname)
    except Exception:
        pass
