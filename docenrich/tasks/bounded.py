"""Model work in micro-batches with a time budget, so a search never waits long behind ingestion.

The model worker runs one task at a time and cannot preempt it. A long embedding task therefore
encodes micro-batches sized to take about EMBED_MICRO_BATCH_SECONDS each, and after each one
checks whether interactive work (a query embedding, a rerank) is waiting, or whether the task
has run for MODEL_TASK_SECONDS. If so, it continues in a new message of the same task with
the rows done so far (`Task.replace`, keeping its id and links), and the worker, which reads
its queues in priority order, runs the interactive task first. An interactive task thus waits
for one micro-batch at most, and every model task is bounded in length.

A search sends two tasks, the query embedding and then the rerank, with its retrieval between
them. While a search holds the model worker (`client.model_hold`), a micro-batch does not start:
the task waits for the search's next message and yields to it, so the rerank does not wait too.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from docenrich.celery_app import INTERACTIVE_QUEUE, MODEL_HOLDS_KEY, queue_keys
from docenrich.config import get_settings

log = logging.getLogger(__name__)

# The first micro-batch of a process, before it has measured the model: small enough to be quick
# with any model on any device.
FIRST_MICRO_BATCH = 4
# How often a paused micro-batch looks again for the search's message, and the longest pause:
# a search's retrieval between its two model tasks takes tens of milliseconds.
HOLD_POLL_SECONDS = 0.005
MAX_HOLD_WAIT = 0.5  # then a micro-batch runs anyway: a steady stream of searches must not stall ingestion


@dataclass
class Carried:
    """What earlier parts of a continued embedding task encoded: rows, sparse weights, model."""

    model: str
    vectors: np.ndarray
    sparse: list[dict[int, float]] | None = None

    @property
    def done(self) -> int:
        return len(self.vectors)


# What a text costs the encoder, in characters: its length plus a fixed part (special tokens, the
# call itself), so a pace measured on short queries also sizes micro-batches of long passages.
TEXT_OVERHEAD_CHARS = 64


def _cost(texts: list[str]) -> int:
    """A micro-batch's size for the encoder: every text is padded to the longest."""
    return len(texts) * max((len(t) + TEXT_OVERHEAD_CHARS for t in texts), default=0)


@dataclass
class _Pace:
    """Seconds per padded character this process measured, per model (an exponential moving average)."""

    per_char: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def size(self, model: str, texts: list[str], cap: int) -> int:
        """How many of `texts` (from the first) fit the time budget: at least 1, at most `cap`."""
        with self.lock:
            seconds = self.per_char.get(model)
        if seconds is None:
            return max(1, min(cap, FIRST_MICRO_BATCH, len(texts)))
        allowance = get_settings().embed_micro_batch_seconds / max(seconds, 1e-12)
        n = longest = 0
        for text in texts[:cap]:
            longest = max(longest, len(text) + TEXT_OVERHEAD_CHARS)
            if n and (n + 1) * longest > allowance:
                break
            n += 1
        return max(1, n)

    def record(self, model: str, texts: list[str], seconds: float) -> None:
        """Fold one micro-batch's time into the estimate."""
        each = seconds / max(1, _cost(texts))
        with self.lock:
            old = self.per_char.get(model)
            self.per_char[model] = each if old is None else 0.7 * old + 0.3 * each


pace = _Pace()


def _look(client) -> tuple[bool, int]:
    """(whether a message waits in the interactive queue, live search holds): one round trip."""
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(INTERACTIVE_QUEUE):
        pipe.llen(key)
    pipe.zcount(MODEL_HOLDS_KEY, time.time(), "+inf")
    *lengths, holds = pipe.execute()
    return any(lengths), holds


def interactive_waiting(client, max_wait: float = MAX_HOLD_WAIT) -> bool:
    """Whether interactive work waits; while a search holds the worker, waits up to max_wait for it."""
    deadline = time.monotonic() + max_wait
    try:
        waiting, holds = _look(client)
        while not waiting and holds and time.monotonic() < deadline:
            time.sleep(HOLD_POLL_SECONDS)
            waiting, holds = _look(client)
        return waiting
    except Exception:  # a broker hiccup must not fail the embedding; it just does not yield
        log.debug("could not read the interactive queue", exc_info=True)
        return False


def encode_bounded(
    encode: Callable[[list[str]], tuple[np.ndarray, list | None]],
    texts: list[str],
    model: str,
    *,
    carried: Carried | None = None,
    should_yield: Callable[[float, int], bool] | None = None,
    yield_with: Callable[[Carried], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Carried:
    """Encode texts (after what `carried` holds) in timed micro-batches; all rows, or a hand-off.

    should_yield(seconds this part has run, texts this part encoded) is asked before each
    micro-batch; when it says yes, yield_with(rows so far) continues the work elsewhere (it raises).
    """
    cap = max(1, get_settings().model_batch_size)
    out = carried if carried is not None and carried.model == model else Carried(model, np.zeros((0, 0), np.float32))
    parts = [out.vectors] if out.done else []
    sparse = list(out.sparse or []) if out.done else []
    start, began = out.done, time.monotonic()
    has_sparse = bool(out.sparse)
    first = start
    while start < len(texts):
        if should_yield is not None and yield_with is not None \
                and should_yield(time.monotonic() - began, start - first):
            log.info("embedded %d of %d texts; the rest continues in a new message", start, len(texts))
            yield_with(Carried(model, np.concatenate(parts) if parts else out.vectors, sparse if has_sparse else None))
        size = pace.size(model, texts[start : start + cap], cap)
        chunk = texts[start : start + size]
        t0 = time.monotonic()
        vectors, weights = encode(chunk)
        pace.record(model, chunk, time.monotonic() - t0)
        parts.append(vectors)
        if weights is not None:
            has_sparse = True
            sparse += weights
        start += len(vectors)
        if progress is not None:
            progress(start, len(texts))
    rows = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return Carried(model, rows, sparse if has_sparse else None)


def yield_policy(client, bulk: bool = True) -> Callable[[float, int], bool]:
    """should_yield for encode_bounded: interactive work waits (or, for bulk work, a search is about
    to send it), or the part has encoded something and run MODEL_TASK_SECONDS.

    A task that came through the interactive queue encodes something before it yields, and never
    waits for a search's hold: it is what the search waits for.
    """
    limit = get_settings().model_task_seconds

    def should_yield(elapsed: float, encoded: int) -> bool:
        if not encoded and not bulk:
            return False
        if encoded and elapsed >= limit:
            return True
        return interactive_waiting(client, MAX_HOLD_WAIT if bulk else 0.0)

    return should_yield
