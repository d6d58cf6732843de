"""Prometheus metrics at /metrics: documents, ingestion, queues, search latency, refusals, workers.

Everything is read at scrape time: document states from the store, queue backlog from Redis,
and what the web processes and workers pushed to Redis (`docenrich.telemetry`): search latency
by stage, upload refusals, task durations, model loads and switches, snippets and pages
ingested. Nothing is counted in the web process itself, so behind a load balancer every web
process answers a scrape with the same totals. The model each worker
holds comes from the status the workers publish.
"""
from __future__ import annotations

import logging
from collections import Counter as Tally

import redis as redis_lib
from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from docenrich import telemetry
from docenrich.records import STATES
from docenrich.web.auth import signed_in, token_matches

log = logging.getLogger(__name__)

metrics = Blueprint("metrics", __name__)

SEARCH_STAGES = ("embed", "retrieve", "rerank", "total")


class WebMetrics:
    """The app's registry (the scrape-time collector), and its observations pushed to Redis."""

    def __init__(self, services):
        self.services = services
        self.registry = CollectorRegistry()
        self.registry.register(ServiceCollector(services))

    def observe_search(self, timings_ms: dict[str, float]) -> None:
        """Record one search's stage timings."""
        seconds = {stage: timings_ms[stage] / 1000.0 for stage in SEARCH_STAGES if stage in timings_ms}
        self._push(telemetry.record_search, seconds)

    def refused(self, reason: str) -> None:
        """Count one refused upload."""
        self._push(telemetry.record_refusal, reason or "unknown")

    def _push(self, record, value) -> None:
        # A metric is never worth failing the request it describes.
        try:
            record(self.services.redis, value)
        except (redis_lib.exceptions.RedisError, OSError) as exc:
            log.warning("metrics: could not record in Redis: %s", exc)


class ServiceCollector:
    """Metrics read when scraped: from the store, Redis queues, and the workers' telemetry."""

    def __init__(self, services):
        self.services = services

    def describe(self):
        return []

    def collect(self):
        yield self._documents()
        try:
            yield from self._from_redis()
            up = 1
        except Exception as exc:  # a scrape must answer while Redis is down
            log.warning("metrics: Redis unreadable: %s", exc)
            up = 0
        gauge = GaugeMetricFamily("docenrich_redis_up", "Whether Redis answered during this scrape.")
        gauge.add_metric([], up)
        yield gauge

    def _documents(self):
        states = Tally(d.state for d in self.services.store.list_documents())
        gauge = GaugeMetricFamily("docenrich_documents", "Documents by state.", labels=["state"])
        for state in STATES:
            gauge.add_metric([state], states.get(state, 0))
        return gauge

    def _from_redis(self):
        redis = self.services.redis
        backlog = GaugeMetricFamily("docenrich_queue_backlog", "Messages waiting in each queue.", labels=["queue"])
        for queue, length in self.services.queue_lengths().items():
            backlog.add_metric([queue], length)
        yield backlog
        ingest = telemetry.read_ingest(redis)
        for what in ("snippets", "pages", "documents"):
            counter = CounterMetricFamily(f"docenrich_{what}_ingested", f"{what.capitalize()} stored by the workers.")
            counter.add_metric([], ingest.get(what, 0.0))
            yield counter
        yield from _web_families(telemetry.read_searches(redis, SEARCH_STAGES), telemetry.read_refusals(redis))
        yield from _task_families(telemetry.read_tasks(redis))
        yield from _model_families(telemetry.read_models(redis), self.services.queue_status()["models"])


def _web_families(searches: dict, refusals: dict[str, float]):
    latency = HistogramMetricFamily("docenrich_search_seconds", "Search latency by stage (embed, retrieve, rerank, total).",
                                    labels=["stage"])
    for stage, stats in searches.items():
        if stats.count:
            latency.add_metric([stage], stats.buckets, stats.total)
    yield latency
    refused = CounterMetricFamily("docenrich_upload_refusals", "Uploaded files refused before any work was queued, by reason.",
                                  labels=["reason"])
    for reason, count in sorted(refusals.items()):
        refused.add_metric([reason], count)
    yield refused


def _task_families(tasks: dict):
    durations = HistogramMetricFamily("docenrich_task_duration_seconds", "Task run time in the workers, by task.",
                                      labels=["task"])
    outcomes = CounterMetricFamily("docenrich_tasks", "Tasks run by the workers, by task and final state.",
                                   labels=["task", "state"])
    for name, stats in tasks.items():
        durations.add_metric([name], stats.buckets, stats.total)
        for state, count in sorted(stats.states.items()):
            outcomes.add_metric([name, state], count)
    yield durations
    yield outcomes


def _model_families(counters: dict[str, float], workers: dict[str, dict]):
    kinds = ("embedder", "reranker")
    for key, name, text in (
        ("switches", "docenrich_model_switches", "Times a worker replaced its resident model with another, by the model it switched to."),
        ("switch_seconds", "docenrich_model_switch_seconds", "Seconds spent switching models, by the model switched to."),
        ("loads", "docenrich_model_loads", "Models loaded from disk into host memory, by kind."),
        ("load_seconds", "docenrich_model_load_seconds", "Seconds spent loading models from disk, by kind."),
    ):
        family = CounterMetricFamily(name, text, labels=["kind"])
        for kind in kinds:
            family.add_metric([kind], counters.get(f"{key}:{kind}", 0.0))
        yield family
    resident = GaugeMetricFamily("docenrich_resident_model", "1 for the model each worker holds on its device.",
                                 labels=["worker", "kind", "model"])
    for worker, status in sorted(workers.items()):
        kind = status.get("resident")
        model = ((status.get("models") or {}).get(kind) or {}).get("effective") if kind else None
        resident.add_metric([worker, kind or "none", model or ""], 1)
    yield resident
    online = GaugeMetricFamily("docenrich_model_workers", "Model workers that published their status.")
    online.add_metric([], len(workers))
    yield online


def _allowed() -> bool:
    expected = current_app.config["API_TOKEN"]
    if not expected:
        return True
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    return (scheme.lower() == "bearer" and token_matches(sent.strip(), expected)) or signed_in()


@metrics.get("/metrics")
def scrape():
    """The metrics in Prometheus' text format; behind API_TOKEN when one is set."""
    if not _allowed():
        return Response("Send `Authorization: Bearer <API_TOKEN>`.\n", 401, {"WWW-Authenticate": "Bearer"},
                        mimetype="text/plain")
    registry = current_app.extensions["docenrich"].metrics.registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
