"""Telemetry pushed through Redis: task durations, model loads and switches, ingestion, and the
web app's search latency and refused uploads.

Workers may run on other machines than the web app, so they do not serve metrics themselves:
each pool child adds its observations to a few Redis hashes, and the web app's `/metrics`
reads them at scrape time. Web processes do the same with their own observations, so a scrape
answered by any one of several web processes reports the whole service. Counters only ever grow; ingestion is also kept per minute for an
hour so the status page can draw throughput.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from docenrich.keys import METRICS_PREFIX

log = logging.getLogger(__name__)

PREFIX = METRICS_PREFIX
TASK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TASK_KEY = PREFIX + "task:{name}"
TASK_NAMES_KEY = PREFIX + "tasks"
MODEL_KEY = PREFIX + "models"
INGEST_KEY = PREFIX + "ingest"
# Ingestion per minute: one hash, fields "<minute>:<count>", the last MINUTES_KEPT minutes kept.
MINUTES_KEY = PREFIX + "minutes"
MINUTES_KEPT = 60
_COUNTS = ("snippets", "pages", "documents")
SEARCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SEARCH_KEY = PREFIX + "search:{stage}"
REFUSALS_KEY = PREFIX + "refusals"


def _bucket_field(bound: float) -> str:
    return "le:" + ("+Inf" if math.isinf(bound) else repr(bound))


def _observe(pipe, key: str, seconds: float, buckets: tuple[float, ...]) -> None:
    """Queue the increments of one observation of a histogram kept in a Redis hash."""
    for bound in (*buckets, math.inf):
        if seconds <= bound:
            pipe.hincrby(key, _bucket_field(bound), 1)
    pipe.hincrbyfloat(key, "sum", float(seconds))
    pipe.hincrby(key, "count", 1)


def record_task(redis, name: str, seconds: float, state: str) -> None:
    """Add one finished task's duration (and its outcome) to the task's histogram."""
    pipe = redis.pipeline(transaction=False)
    key = TASK_KEY.format(name=name)
    _observe(pipe, key, seconds, TASK_BUCKETS)
    pipe.hincrby(key, f"state:{state}", 1)
    pipe.sadd(TASK_NAMES_KEY, name)
    pipe.execute()


def record_model_event(redis, event: dict) -> None:
    """Count a model manager event: a switch (one model replaced another) with its seconds, or a cold load."""
    kind, seconds = event.get("kind") or "unknown", float(event.get("seconds") or 0.0)
    pipe = redis.pipeline(transaction=False)
    if event.get("event") == "load" and event.get("previous"):
        pipe.hincrby(MODEL_KEY, f"switches:{kind}", 1)
        pipe.hincrbyfloat(MODEL_KEY, f"switch_seconds:{kind}", seconds)
    elif event.get("event") == "cold_load":
        pipe.hincrby(MODEL_KEY, f"loads:{kind}", 1)
        pipe.hincrbyfloat(MODEL_KEY, f"load_seconds:{kind}", seconds)
    else:
        return
    pipe.execute()


def record_ingest(redis, snippets: int, pages: int, documents: int = 0) -> None:
    """Count snippets and pages stored (and documents finished), in total and for this minute."""
    minute = int(time.time() // 60)
    pipe = redis.pipeline(transaction=False)
    for name, value in zip(_COUNTS, (snippets, pages, documents), strict=True):
        if value:
            pipe.hincrby(INGEST_KEY, name, int(value))
            pipe.hincrby(MINUTES_KEY, f"{minute}:{name}", int(value))
    # The minutes before the window: one key, whose size stays put however long the service runs.
    pipe.hdel(MINUTES_KEY, *(f"{m}:{name}" for m in range(minute - MINUTES_KEPT - 5, minute - MINUTES_KEPT)
                             for name in _COUNTS))
    pipe.execute()


@dataclass
class TaskStats:
    """One task's duration histogram: cumulative bucket counts, sum, count, outcomes."""

    buckets: list[tuple[str, int]]
    total: float
    count: int
    states: dict[str, int] = field(default_factory=dict)


def record_search(redis, seconds_by_stage: dict[str, float]) -> None:
    """Add one search's latency by stage (embed, retrieve, rerank, total) to the stages' histograms."""
    pipe = redis.pipeline(transaction=False)
    for stage, seconds in seconds_by_stage.items():
        _observe(pipe, SEARCH_KEY.format(stage=stage), seconds, SEARCH_BUCKETS)
    pipe.execute()


def record_refusal(redis, reason: str) -> None:
    """Count one upload refused before any work was queued."""
    redis.hincrby(REFUSALS_KEY, reason, 1)


def read_searches(redis, stages: tuple[str, ...]) -> dict[str, TaskStats]:
    """The search latency histogram of each stage."""
    pipe = redis.pipeline(transaction=False)
    for stage in stages:
        pipe.hgetall(SEARCH_KEY.format(stage=stage))
    return {stage: _task_stats(raw, SEARCH_BUCKETS) for stage, raw in zip(stages, pipe.execute(), strict=True)}


def read_refusals(redis) -> dict[str, float]:
    """Refused uploads, by reason."""
    return _numbers(redis.hgetall(REFUSALS_KEY))


def _task_stats(raw: dict, bounds: tuple[float, ...] = TASK_BUCKETS) -> TaskStats:
    values = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    buckets = [(("+Inf" if math.isinf(b) else repr(b)), int(values.get(_bucket_field(b), 0)))
               for b in (*bounds, math.inf)]
    states = {k.split(":", 1)[1]: int(v) for k, v in values.items() if k.startswith("state:")}
    return TaskStats(buckets, float(values.get("sum", 0)), int(values.get("count", 0)), states)


def read_tasks(redis) -> dict[str, TaskStats]:
    """Every task's duration histogram, by task name."""
    names = sorted(n.decode() if isinstance(n, bytes) else n for n in redis.smembers(TASK_NAMES_KEY))
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(TASK_KEY.format(name=name))
    return {name: _task_stats(raw) for name, raw in zip(names, pipe.execute())}


def _numbers(raw: dict) -> dict[str, float]:
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}


def read_models(redis) -> dict[str, float]:
    """Model counters: switches:<kind>, switch_seconds:<kind>, loads:<kind>, load_seconds:<kind>."""
    return _numbers(redis.hgetall(MODEL_KEY))


def read_ingest(redis) -> dict[str, float]:
    """Totals of snippets, pages and documents ingested."""
    return _numbers(redis.hgetall(INGEST_KEY))


def throughput(redis, minutes: int = 60) -> list[dict]:
    """Snippets, pages and documents ingested in each of the last `minutes` minutes, oldest first."""
    now = int(time.time() // 60)
    keys = [now - i for i in range(min(minutes, MINUTES_KEPT) - 1, -1, -1)]
    raw = redis.hmget(MINUTES_KEY, [f"{m}:{name}" for m in keys for name in _COUNTS])
    values = [int(v) if v is not None else 0 for v in raw]
    return [{"minute": minute * 60, **dict(zip(_COUNTS, values[i * 3:i * 3 + 3], strict=True))}
            for i, minute in enumerate(keys)]
