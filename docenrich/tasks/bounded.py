"""Model work in micro-batches with a time budget, so a search never waits long behind ingestion.

The model worker runs one task at a time and cannot preempt it. A long embedding task therefore
encodes micro-batches sized to take about EMBED_MICRO_BATCH_SECONDS each, and after each one
checks whether interactive work (a query embedding, a rerank) is waiting, or whether the task
has run for MODEL_TASK_SECONDS. If so, it continues in a new message of the same task with
the rows done so far (`Task.replace`, keeping its id and links), and the worker, which reads
its queues in priority order, runs the interactive task first. An interactive task thus waits
for one micro-batch at most, and every model task is bounded in length.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from docenrich.celery_app import INTERACTIVE_QUEUE, queue_keys
from docenrich.config import get_settings

log = logging.getLogger(__name__)

# The first micro-batch of a process, before it has measured the model: small enough to be quick
# with any model on any device.
FIRST_MICRO_BATCH = 4


@dataclass
class Carried:
    """What earlier parts of a continued embedding task encoded: rows, sparse weights, model."""

    model: str
    vectors: np.ndarray
    sparse: list[dict[int, float]] | None = None

    @property
    def done(self) -> int:
        return len(self.vectors)


@dataclass
class _Pace:
    """Seconds per text this process measured, per model (an exponential moving average)."""

    per_text: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def size(self, model: str, cap: int) -> int:
        """Texts per micro-batch: as many as fit the time budget, at least 1, at most `cap`."""
        with self.lock:
            seconds = self.per_text.get(model)
        if seconds is None:
            return max(1, min(cap, FIRST_MICRO_BATCH))
        budget = get_settings().embed_micro_batch_seconds
        return max(1, min(cap, int(budget / max(seconds, 1e-6))))

    def record(self, model: str, texts: int, seconds: float) -> None:
        """Fold one micro-batch's time into the estimate."""
        each = seconds / max(1, texts)
        with self.lock:
            old = self.per_text.get(model)
            self.per_text[model] = each if old is None else 0.7 * old + 0.3 * each


pace = _Pace()


def interactive_waiting(client) -> bool:
    """Whether a message waits in the interactive queue (any priority level): one round trip."""
    try:
        pipe = client.pipeline(transaction=False)
        for key in queue_keys(INTERACTIVE_QUEUE):
            pipe.llen(key)
        return any(pipe.execute())
    except Exception:  # a broker hiccup must not fail the embedding; it just does not yield
        log.debug("could not read the interactive queue", exc_info=True)
        return False


def encode_bounded(
    encode: Callable[[list[str]], tuple[np.ndarray, list | None]],
    texts: list[str],
    model: str,
    *,
    carried: Carried | None = None,
    should_yield: Callable[[float], bool] | None = None,
    yield_with: Callable[[Carried], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Carried:
    """Encode texts (after what `carried` holds) in timed micro-batches; all rows, or a hand-off.

    should_yield(seconds this part has run) is asked after each micro-batch while texts remain;
    when it says yes, yield_with(rows so far) continues the work elsewhere (it raises).
    """
    cap = max(1, get_settings().model_batch_size)
    out = carried if carried is not None and carried.model == model else Carried(model, np.zeros((0, 0), np.float32))
    parts = [out.vectors] if out.done else []
    sparse = list(out.sparse or []) if out.done else []
    start, began = out.done, time.monotonic()
    has_sparse = bool(out.sparse)
    while start < len(texts):
        size = pace.size(model, cap)
        t0 = time.monotonic()
        vectors, weights = encode(texts[start : start + size])
        pace.record(model, size, time.monotonic() - t0)
        parts.append(vectors)
        if weights is not None:
            has_sparse = True
            sparse += weights
        start += len(vectors)
        if progress is not None:
            progress(start, len(texts))
        if start < len(texts) and should_yield is not None and yield_with is not None \
                and should_yield(time.monotonic() - began):
            log.info("embedded %d of %d texts; the rest continues in a new message", start, len(texts))
            yield_with(Carried(model, np.concatenate(parts), sparse if has_sparse else None))
    rows = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return Carried(model, rows, sparse if has_sparse else None)


def yield_policy(client) -> Callable[[float], bool]:
    """should_yield for encode_bounded: interactive work waits, or the part ran MODEL_TASK_SECONDS."""
    limit = get_settings().model_task_seconds

    def should_yield(elapsed: float) -> bool:
        return elapsed >= limit or interactive_waiting(client)

    return should_yield
