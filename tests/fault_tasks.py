"""Tasks that misbehave on purpose, loaded into test workers with `--include tests.fault_tasks`.

They use the real task base class, so retries, delivery caps and time limits are Celery's own.
"""
from __future__ import annotations

import os
import signal
import time

from celery_worker import DocenrichTask, celery_app, get_sentence_embedding_task
from docenrich.models.errors import ModelLoadError


@celery_app.task(bind=True, base=DocenrichTask, name="tests.flaky_embedding", retry_backoff=1)
def flaky_embedding(self, text: str, failures: int):
    """Fail with a transient model-load error on the first `failures` attempts, then embed."""
    if self.request.retries < failures:
        raise ModelLoadError(f"simulated transient load failure, attempt {self.request.retries + 1}")
    return get_sentence_embedding_task(text)


@celery_app.task(bind=True, base=DocenrichTask, name="tests.slow_embedding")
def slow_embedding(self, text: str, seconds: float):
    """Report the child pid, sleep, then embed: a window in which to kill the child."""
    self.update_state(state="PROGRESS", meta={"pid": os.getpid(), "retries": self.request.retries})
    time.sleep(seconds)
    return {"pid": os.getpid(), "embedding": get_sentence_embedding_task(text)}


@celery_app.task(bind=True, base=DocenrichTask, name="tests.kill_worker")
def kill_worker(self):
    """Kill the pool child on every delivery, like a segfault or the OOM killer."""
    os.kill(os.getpid(), signal.SIGKILL)


@celery_app.task(bind=True, base=DocenrichTask, name="tests.sleep")
def sleep_task(self, seconds: float):
    """Sleep; used to cross the soft and hard time limits."""
    time.sleep(seconds)
    return seconds


@celery_app.task(bind=True, base=DocenrichTask, name="tests.ignore_soft_limit")
def ignore_soft_limit(self, seconds: float):
    """Swallow SoftTimeLimitExceeded and keep sleeping: only the hard time limit stops it."""
    from celery.exceptions import SoftTimeLimitExceeded

    self.update_state(state="PROGRESS", meta={"pid": os.getpid()})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(max(0.0, deadline - time.monotonic()))
        except SoftTimeLimitExceeded:
            continue
    return os.getpid()


@celery_app.task(bind=True, base=DocenrichTask, name="tests.touch")
def touch(self, path: str):
    """Create a file: proof that a message was executed."""
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return path


# Poison batches, injected where the pipeline really works: a page whose extraction kills its
# pool child (TEST_KILL_EXTRACT_PAGE) and a text whose embedding kills the model child
# (TEST_KILL_EMBED_WORD). Workers of other tests have neither variable set.
def _kill_extracting(extract):
    def wrapped(task, doc, start: int, end: int):
        page = int(os.environ.get("TEST_KILL_EXTRACT_PAGE") or 0)
        if start <= page <= end:
            os.kill(os.getpid(), signal.SIGKILL)
        return extract(task, doc, start, end)

    return wrapped


def _kill_embedding(encode):
    def wrapped(task, texts, *args, **kwargs):
        word = os.environ.get("TEST_KILL_EMBED_WORD")
        if word and any(word in t for t in texts):
            os.kill(os.getpid(), signal.SIGKILL)
        return encode(task, texts, *args, **kwargs)

    return wrapped


def _fail_staging_once(stage):
    """Raise on the first staging after the file TEST_FAIL_STAGE_ONCE names appears, which it removes."""
    def wrapped(*args, **kwargs):
        flag = os.environ.get("TEST_FAIL_STAGE_ONCE")
        if flag and os.path.exists(flag):
            os.remove(flag)
            raise RuntimeError("simulated failure between the claim and the hand-off")
        return stage(*args, **kwargs)

    return wrapped


if os.environ.get("TEST_KILL_EXTRACT_PAGE") or os.environ.get("TEST_KILL_EMBED_WORD"):
    from docenrich.tasks import model as _model
    from docenrich.tasks import pipeline as _pipeline

    _pipeline._extract = _kill_extracting(_pipeline._extract)
    _model._encode_in_batches = _kill_embedding(_model._encode_in_batches)

if os.environ.get("TEST_FAIL_STAGE_ONCE"):
    from docenrich.tasks import staging as _staging

    _staging.stage = _fail_staging_once(_staging.stage)
