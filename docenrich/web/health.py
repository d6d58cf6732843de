"""Health: `/healthz` for machines, and the banners every page shows people."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import redis
from flask import Blueprint, current_app, jsonify, request

from docenrich.search import fallback_note
from docenrich.web.errors import redis_reason

log = logging.getLogger(__name__)

health = Blueprint("health", __name__)


def services():
    """The app's shared Services."""
    return current_app.extensions["docenrich"]


@health.get("/healthz")
def healthz():
    """Redis, workers, models, queue backlog and document counts; 503 when nothing can work.
    With API_TOKEN set, a caller without the token learns only ok or not."""
    svc = services()
    if current_app.config["API_TOKEN"] and not _authorised():
        healthy = _healthy(svc)
        return jsonify(status="ok" if healthy else "unavailable"), 200 if healthy else 503
    status = svc.queue_status()
    body: dict[str, Any] = {"redis": {"ok": status["ok"], "error": status["error"]}}
    body["workers"] = svc.workers_online() if status["ok"] else []
    body["models"] = status["models"]
    try:
        body["queues"] = svc.queue_lengths() if status["ok"] else {}
    except redis.exceptions.RedisError as exc:
        body["queues"], body["redis"] = {}, {"ok": False, "error": redis_reason(exc)}
    states = Counter(d.state for d in svc.store.list_documents())
    body["documents"] = {"queued": svc.store.queued_count(), "total": sum(states.values()), **states}
    healthy = body["redis"]["ok"] and bool(body["workers"])
    body["status"] = "ok" if healthy else "unavailable"
    return jsonify(body), 200 if healthy else 503


def _authorised() -> bool:
    from docenrich.web.auth import signed_in, token_matches

    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    return (scheme.lower() == "bearer" and token_matches(sent.strip(), current_app.config["API_TOKEN"])) or signed_in()


def _healthy(svc) -> bool:
    try:
        return bool(svc.queue_status()["ok"] and svc.workers_online())
    except Exception:
        return False


def status_notices() -> list[dict]:
    """Banners for every page: queue down, no worker, fallback embedder, no reranker. Never raises."""
    try:
        status = services().queue_status()
    except Exception:
        log.warning("status check failed", exc_info=True)
        status = {"ok": False, "models": {}}
    if not status["ok"]:
        return [{"level": "error", "text": "Queue unreachable: uploads and search wait until Redis is back."}]
    models = status["models"]
    if not models:
        return [{"level": "warn", "text": "No model worker is running: uploads wait and search is unavailable."}]
    notices = []
    if note := fallback_note(models):
        notices.append({"level": "warn", "text": note})
    for worker in models.values():
        reason = ((worker.get("models") or {}).get("reranker") or {}).get("unavailable")
        if reason:
            notices.append({"level": "info", "text": f"Reranking unavailable ({reason}); results use vector order."})
            break
    return notices
