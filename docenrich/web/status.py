"""The status page (`/status`) and its JSON (`/api/status`): workers and their models, queue
backlog, ingestion over the last hour, recent failures."""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from flask import Blueprint, jsonify, render_template

from docenrich import telemetry
from docenrich.records import FAILED, STATES
from docenrich.web.auth import authenticate_api
from docenrich.web.params import services

log = logging.getLogger(__name__)

status = Blueprint("status", __name__)

RECENT_FAILURES = 20
CHART = {"width": 960, "height": 110, "minutes": 60}


def when(timestamp: float) -> str:
    """A timestamp as local date and time, for people."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _workers(svc, ok: bool) -> list[dict]:
    """Each worker online, with the model it holds (model workers) or its role (document workers)."""
    online = svc.workers_online() if ok else []
    models = svc.queue_status()["models"] if ok else {}
    out = []
    for name in sorted(set(online) | set(models)):
        info = models.get(name) or {}
        kind = info.get("resident")
        model = ((info.get("models") or {}).get(kind) or {}).get("effective") if kind else None
        out.append({
            "name": name, "online": name in online, "model_worker": name in models,
            "resident": kind, "model": model, "device": info.get("device"),
            "host_cache": info.get("host_cache") or [],
        })
    return out


def snapshot() -> dict[str, Any]:
    """Everything the status page shows, as plain data."""
    svc = services()
    redis_state = svc.queue_status()
    ok = redis_state["ok"]
    body: dict[str, Any] = {"redis": {"ok": ok, "error": redis_state["error"]}, "workers": _workers(svc, ok)}
    try:
        body["queues"] = svc.queue_lengths() if ok else {}
        body["throughput"] = telemetry.throughput(svc.redis, CHART["minutes"]) if ok else []
    except Exception as exc:  # the page still shows what the store knows
        log.warning("status: Redis unreadable: %s", exc)
        body["queues"], body["throughput"] = {}, []
    docs = svc.store.list_documents()
    states = Counter(d.state for d in docs)
    body["documents"] = {state: states.get(state, 0) for state in STATES}
    failed = sorted((d for d in docs if d.state == FAILED), key=lambda d: d.updated_at, reverse=True)
    body["failures"] = [{"id": d.id, "filename": d.filename, "error": d.error or "Processing failed.",
                         "at": d.updated_at} for d in failed[:RECENT_FAILURES]]
    body["generated_at"] = time.time()
    return body


def chart(throughput: list[dict]) -> dict[str, Any]:
    """Bars of snippets stored per minute, scaled into the chart's box, with their hover text."""
    width, height = CHART["width"], CHART["height"]
    peak = max((m["snippets"] for m in throughput), default=0)
    step = width / max(len(throughput), 1)
    bars = []
    for i, minute in enumerate(throughput):
        h = 0 if not peak else max(1.0, height * minute["snippets"] / peak) if minute["snippets"] else 0
        at = time.strftime("%H:%M", time.localtime(minute["minute"]))
        bars.append({"x": round(i * step + 1, 1), "y": round(height - h, 1), "w": round(max(step - 2, 1), 1),
                     "h": round(h, 1), "title": f"{at}: {minute['snippets']} snippets, {minute['pages']} pages"})
    totals = {k: sum(m[k] for m in throughput) for k in ("snippets", "pages", "documents")}
    return {"width": width, "height": height, "peak": peak, "bars": bars, "totals": totals}


@status.get("/status")
def status_page():
    """The status page, for people who would rather look than read JSON."""
    body = snapshot()
    return render_template("status.html", status=body, chart=chart(body["throughput"]))


@status.get("/api/status")
def status_json():
    """The status page's content as JSON."""
    authenticate_api()
    return jsonify(snapshot())
