"""Poison batches end: attempts are counted per (document, run, page batch), whatever message
carries the batch (a redelivery, a retry, recovery's re-send), and after BATCH_MAX_ATTEMPTS the
batch's pages are recorded as failed and the document goes on without them."""
from __future__ import annotations

import logging

from docenrich.config import get_settings
from docenrich.keys import ATTEMPTS_KEY, ATTEMPTS_TTL
from docenrich.tasks.base import redis_client

log = logging.getLogger(__name__)

# Said of an attempt until it ends: if its process dies, that is what happened.
DIED = "the worker process died"
TIMED_OUT = "the extraction timed out"


def _key(doc_id: str, generation: int, batch_index: int) -> str:
    return ATTEMPTS_KEY.format(doc_id=doc_id, generation=generation, batch_index=batch_index)


def of_lease(lease: str) -> tuple[str, int, int]:
    """(document, generation, batch) of a lease key."""
    doc_id, generation, batch_index = lease.rsplit(":", 3)[-3:]
    return doc_id, int(generation), int(batch_index)


def begin(doc_id: str, generation: int, batch_index: int) -> tuple[int, str | None]:
    """Count one more attempt at a batch: (attempts before this one, why the last one failed)."""
    key = _key(doc_id, generation, batch_index)
    client = redis_client()
    pipe = client.pipeline()
    pipe.hget(key, "reason")
    pipe.hincrby(key, "attempts", 1)
    pipe.hset(key, "reason", DIED)
    pipe.expire(key, ATTEMPTS_TTL)
    reason, count, _, _ = pipe.execute()
    return int(count) - 1, reason.decode() if isinstance(reason, bytes) else reason


def failed(doc_id: str, generation: int, batch_index: int, reason: str) -> int:
    """Record why this attempt failed; returns the attempts made so far."""
    key = _key(doc_id, generation, batch_index)
    client = redis_client()
    pipe = client.pipeline()
    pipe.hset(key, "reason", reason)
    pipe.hget(key, "attempts")
    pipe.expire(key, ATTEMPTS_TTL)
    _, count, _ = pipe.execute()
    return int(count or 0)


def reason(doc_id: str, generation: int, batch_index: int) -> str | None:
    """Why the last attempt at a batch failed, if it did."""
    raw = redis_client().hget(_key(doc_id, generation, batch_index), "reason")
    return raw.decode() if isinstance(raw, bytes) else raw


def undo(doc_id: str, generation: int, batch_index: int) -> None:
    """Take back this attempt: it is retried for a reason that is not the batch's (a database or
    Redis blip, a model that failed to load), which must not use up the batch's attempts."""
    redis_client().hincrby(_key(doc_id, generation, batch_index), "attempts", -1)


def succeeded(doc_id: str, generation: int, batch_index: int) -> None:
    """The batch went through: its count has done its job."""
    redis_client().delete(_key(doc_id, generation, batch_index))


def exhausted(attempts: int) -> bool:
    """Whether a batch tried `attempts` times is given up."""
    return attempts >= get_settings().batch_max_attempts


def note(start: int, end: int, reason: str | None, attempts: int) -> str:
    """The sentence shown with the document: which pages, and why."""
    pages = f"page {start}" if start == end else f"pages {start}–{end}"
    times = "once" if attempts == 1 else f"{attempts} times"
    return f"{pages} could not be processed: {reason or DIED} {times}"


def describe(exc: BaseException | None, step: str) -> str:
    """Why an attempt failed, in words for the note (no paths, no hosts)."""
    from docenrich.tasks.base import WorkerLostTooOften, is_time_limit

    if is_time_limit(exc):
        return f"the {step} timed out" if step != "extraction" else TIMED_OUT
    if isinstance(exc, WorkerLostTooOften) or exc is None:
        return DIED
    return f"the {step} failed ({type(exc).__name__})"
